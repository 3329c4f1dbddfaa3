"""Breach decisions: is a gap beyond its threshold, with error control over the whole stream?

A gap of a fairness metric breaches its threshold when two groups' rates
differ by more than it. We declare a breach only when anytime-valid bounds
say so: for some pair of groups, the lower confidence-sequence bound of one
rate minus the upper bound of the other exceeds the threshold. If every
group's confidence sequence covers its rate at every moment, no breach is
ever declared falsely, so the family-wise error is the chance that any of
them fails, which Bonferroni keeps under ``family_error``:

- split over the attributes (and the subgroup search), then over the three
  rates that decisions use (selection rate, TPR, FPR);
- per rate, ``SINCE_START_SHARE`` goes to one sequence over everything since
  start, the rest to *restarting blocks*, so that a change is seen quickly
  and power grows with evidence: scale s (s = 0, 1, 2, ..., without a cap)
  restarts every ``block_events`` x 2^s predictions, with ``staggers`` offset
  copies; scale s is started once the stream holds one of its blocks, so a
  stream of n predictions holds O(log n) sequences. Scale s spends
  2 / ((s+2)(s+3)) of the blocks' share (``scale_share``), split over its
  copies, and the k-th block of a copy log 2 (1/log(k+1) - 1/log(k+2)) of
  that (``block_share``): the sums over s and k are 1, so the error holds
  over the endless stream. The copies' first
  blocks start together on the same counts, so they are one sequence holding
  all their shares;
- each sequence's share is split over the pairs a decision can compare (the
  ``max_decision_groups`` slots: the first groups to reach ``min_group_size``;
  later ones take no part; in the search, the cells, each with its rest):
  evenly in the since-start sequence, and in a block 1 - ``NEW_GROUP_SHARE``
  over the pairs of the groups slotted when it started, the rest over the
  pairs with a group slotted later (the split is fixed when the block starts,
  so Bonferroni holds as for an even one).

A persistent breach that a fixed-sample test would see after m post-change
predictions falls, once 2^s >= about 2m / block_events, in a block that
starts within half a block of the change and sees enough of it: it is
declared with probability one, with a delay of a few m (docs/statistics.md).
A block's mixing prior for a group is half Jeffreys and half centred on the
group's rate in its copy's previous block (since start, for a first block;
``centred_prior``): an unchanged group then costs a few nats less, and so does
a changed one in the blocks that start a block length after its change; one
that changed since the previous block costs log 2 more (``confseq.log_marginal``).

Labels count in the block that is current when they arrive. Confidence
sequences: ``monitor.confseq`` (beta-binomial mixture). Fixed-sample
intervals elsewhere are for display only.

Decisions are checked every ``check_events`` predictions, and at the first
batch after ``check_seconds`` have passed on the clock handed to ``observe``
(a slow stream). With several workers, ``MergedDecisions`` makes the
decisions on the sum of the workers' counts, as one worker that saw
everything would (counts are additive).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from fairwatch.monitor.config import MonitorConfig
from fairwatch.monitor.confseq import pair_difference_lower, pair_ratio_lower
from fairwatch.monitor.decision_key import DecisionKey

# Accumulator columns: (trials, successes) of the selection rate, TPR and FPR.
SEL_N, SEL_X, TPR_N, TPR_X, FPR_N, FPR_X = range(6)
RATE_COLUMNS = {"selection_rate": (SEL_X, SEL_N), "tpr": (TPR_X, TPR_N), "fpr": (FPR_X, FPR_N)}
RATES = tuple(RATE_COLUMNS)
SUCCESS_COLUMNS = [RATE_COLUMNS[rate][0] for rate in RATES]
TRIAL_COLUMNS = [RATE_COLUMNS[rate][1] for rate in RATES]
GAP_RATES = {
    "demographic_parity_difference": ("selection_rate",),
    "demographic_parity_ratio": ("selection_rate",),
    "equalized_odds_difference": ("tpr", "fpr"),
}
SUBGROUP_METRICS = {
    "selection_rate": "demographic_parity_difference",
    "tpr": "equalized_odds_difference",
    "fpr": "equalized_odds_difference",
}
# The decision metric of a searched cell against the rest of the stream, per rate, and back.
CELL_METRICS = {rate: f"subgroup_{rate}_difference" for rate in RATE_COLUMNS}
CELL_RATES = {metric: rate for rate, metric in CELL_METRICS.items()}
BLOCK_SPENDING = 6 / math.pi**2  # sum over k >= 1 of BLOCK_SPENDING / k^2 is 1


def scale_share(scale: int) -> float:
    """Scale s's share of the blocks' error: 2 / ((s + 2)(s + 3)), which sums to 1 over
    s >= 0 (the terms telescope: 2 (1/(s+2) - 1/(s+3))). Flatter than 1/(s+1)^2: the
    large scales, which catch the moderate breaches that need many events, pay about
    log(s^2 / 2) nats instead of log(1.6 s^2); scale 0, whose breaches are caught within
    a look or two anyway, pays 1.1 nats instead of 0.5.

    >>> round(sum(scale_share(s) for s in range(100_000)), 4)
    1.0
    """
    return 2.0 / ((scale + 2) * (scale + 3))


def inverse_square_scale_share(scale: int) -> float:
    """The scale shares of decisions saved before 2026-11-29, 6 / (pi^2 (s+1)^2): a monitor
    restored from such a snapshot keeps them for good (a sequence whose level grew
    mid-life, or new blocks spending on the new terms beside old ones, could overspend)."""
    return BLOCK_SPENDING / (scale + 1) ** 2


SCALE_SHARES = {"telescoping": scale_share, "inverse_square": inverse_square_scale_share}


def block_share(block: int) -> float:
    """The k-th block of a copy's share of the copy's error: log 2 (1/log(k+1) - 1/log(k+2)),
    which telescopes to 1 over k >= 1. About log 2 / (k log^2 k): the k-th block of a copy in a
    long stream pays log k + 2 log log k nats, where 6 / (pi^2 k^2) paid 2 log k (after 3,000,000
    predictions, a block of 64,000 is the 47th of its copy: 7.0 nats instead of 8.2). The
    first block pays 1.0 nats instead of 0.5.

    >>> round(sum(block_share(k) for k in range(1, 10**6)) + math.log(2) / math.log(10**6 + 1), 12)
    1.0
    >>> [round(block_share(k), 4) for k in (1, 2, 47)]
    [0.3691, 0.1309, 0.0009]
    """
    return math.log(2) * (1 / math.log(block + 1) - 1 / math.log(block + 2))


def inverse_square_block_share(block: int) -> float:
    """The block shares of decisions saved before ``block_share`` (2026-11-29), 6 / (pi^2 k^2):
    kept for good by a monitor restored from such a snapshot (as ``inverse_square_scale_share``)."""
    return BLOCK_SPENDING / block**2


BLOCK_SHARES = {"log_telescoping": block_share, "inverse_square": inverse_square_block_share}
# Share of each (rate, group) error for the sequence over everything since
# start: it decides on breaches present from the beginning; the rest goes to
# the blocks, which see changes.
SINCE_START_SHARE = 0.25
# A block splits its error over the pairs of the groups that held a slot when it started
# (known then, so the split is fixed in advance), all but this share, which goes to the
# pairs with a group slotted later: with 6 groups of 20 slots, each pair gets 0.9 / 15
# instead of 1 / 190 of it (2.4 nats).
NEW_GROUP_SHARE = 0.1
# A group's rate before a block started centres half of the block's mixing prior for it
# (``confseq.log_marginal``), given at least this many trials.
MIN_CENTRE_TRIALS = 30
RATE_USERS = {rate: tuple(m for m, rates in GAP_RATES.items() if rate in rates) for rate in RATES}
SELECTION_ONLY = np.array([r == "selection_rate" for r in RATES])


def observation_rows(codes: np.ndarray, prediction: np.ndarray, label: np.ndarray, n_groups: int,
                     with_predictions: bool = True) -> np.ndarray:
    """(n_groups, 6) accumulator rows added by predictions (and their labels, if any).

    One bincount over (group, label state, prediction) gives all six columns.
    """
    keep = codes >= 0
    state = np.where(label == 1, 2, np.where(label == 0, 1, 0))  # unlabeled, negative, positive
    cell = (codes[keep] * 3 + state[keep]) * 2 + prediction[keep]
    counts = np.bincount(cell, minlength=n_groups * 6)[: n_groups * 6].reshape(n_groups, 3, 2)
    rows = np.zeros((n_groups, 6))
    if with_predictions:
        rows[:, SEL_N] = counts.sum(axis=(1, 2))
        rows[:, SEL_X] = counts[:, :, 1].sum(axis=1)
    rows[:, TPR_N] = counts[:, 2].sum(axis=1)
    rows[:, TPR_X] = counts[:, 2, 1]
    rows[:, FPR_N] = counts[:, 1].sum(axis=1)
    rows[:, FPR_X] = counts[:, 1, 1]
    return rows


def _since(now: np.ndarray | None, then: np.ndarray | None) -> np.ndarray | None:
    """Counts added between two readings of since-start counts (``then`` None: all of ``now``);
    groups that appeared after ``then`` have all their counts in it."""
    if now is None or then is None:
        return now
    out = now.copy()
    out[: then.shape[0]] -= then
    return out


@dataclass
class Accumulator:
    """One sequence: since start (``length`` None), or one block of a restarting copy
    (scale, offset), which lives ``lifetime`` block lengths. A block's counts are the
    since-start counts now minus ``base``, the since-start counts when it started:
    every observation lands in the since-start counts only, however many blocks live."""

    length: int | None
    offset: int = 0
    scale: int = 0
    block: int = 1  # k, 1-based: the copy's k-th block spends block_share(k)
    current: int = 0  # id of this block, (clock + offset) // length
    base: dict[str, np.ndarray] = field(default_factory=dict)
    base_clock: int = 0  # the clock when ``base`` was taken
    base_slots: dict[str, int] = field(default_factory=dict)  # attribute -> slots held when it started
    copies: int = 1  # the copies whose first blocks this one stands for (they start together: one sequence)
    # Counts of the window that centres this block's prior, fixed when it starts (its copy's
    # previous block until then; since start, for a first block), and the predictions it spans
    # (0: the prior is not centred).
    centre: dict[str, np.ndarray] = field(default_factory=dict)
    centre_span: int = 0

    def __setstate__(self, state: dict) -> None:
        """Unpickle; a block saved before centred priors and pair splits (no ``base_clock``,
        ``base_slots``, ``copies``) keeps the Jeffreys prior and the even split it started with,
        and one saved before ``centre`` its prior centred on the rates since start."""
        self.__dict__.update({"base_clock": 0, "base_slots": {}, "copies": 1, **state})
        if "centre" not in state or "base_clock" not in state:
            self.centre, self.centre_span = self.base, self.base_clock

    def block_of(self, clock: int) -> int:
        return 0 if self.length is None else (clock + self.offset) // self.length

    def rows(self, counts: dict[str, np.ndarray], attribute: str) -> np.ndarray | None:
        """This sequence's (groups, 6) counts of ``attribute``, given the since-start ``counts``."""
        return _since(counts.get(attribute), self.base.get(attribute))

    def held(self, attribute: str) -> int:
        """Slots of ``attribute`` held when this block started (0 for the since-start sequence)."""
        return 0 if self.length is None else self.base_slots.get(attribute, 0)

    def centre_rows(self, attribute: str) -> np.ndarray | None:
        """(groups, 6) counts of ``attribute`` in the window that centres this block's prior."""
        return None if self.length is None else self.centre.get(attribute)

    def prior_strength(self, lifetime: int) -> float:
        """Trials a group's count in the centring window weighs in the block's prior, per
        trial: 1, or less where the block will see fewer of the group's trials than the
        window had (a block lives ``lifetime`` block lengths). 0: no centre."""
        if self.length is None or self.centre_span <= 0:
            return 0.0
        return min(1.0, lifetime * self.length / self.centre_span)

    def share(self, staggers: int, scale_spending: str = "telescoping",
              block_spending: str = "log_telescoping") -> float:
        """This sequence's share of a (rate, group)'s error (``SCALE_SHARES[scale_spending]``
        for its scale, ``BLOCK_SHARES[block_spending]`` for its place in its copy)."""
        if self.length is None:
            return SINCE_START_SHARE
        per_copy = (1 - SINCE_START_SHARE) * SCALE_SHARES[scale_spending](self.scale) / staggers
        return per_copy * BLOCK_SHARES[block_spending](self.block) * self.copies

    @property
    def start(self) -> int:
        """The clock (prediction count) at which this block started, 0 for the first."""
        return 0 if self.length is None else max(0, self.current * self.length - self.offset)

    @property
    def name(self) -> str:
        return "all" if self.length is None else f"block_{self.length}_from_{self.start}"


@dataclass(frozen=True)
class Evidence:
    """The strongest evidence about one (attribute, metric) at one check."""

    statistic: float  # difference: best pair lower bound; ratio: best pair upper bound
    value: float  # point estimate of that pair's difference or ratio
    lower: float
    upper: float
    groups: tuple[str, str] | None
    window: str
    clear: float  # difference: upper bound of the gap; ratio: lower bound of the min ratio


@dataclass(frozen=True)
class Onset:
    """A breach, declared: one entry of the report's ``alerts`` list."""

    model: str
    attribute: str
    metric: str
    event_index: int
    value: float
    lower: float
    upper: float
    threshold: float
    groups: dict | list
    window: str

    def as_dict(self) -> dict:
        out = asdict(self)
        del out["model"]
        return out


@dataclass(frozen=True)
class DecisionState:
    """What the latest check decided for one (attribute, metric): exported as gauges."""

    breached: bool
    bound: float  # the anytime-valid bound the decision compared with the threshold
    threshold: float
    evidence: Evidence | None


def worst_per_metric(states: dict[DecisionKey, DecisionState]) -> dict[tuple[str, str], DecisionState]:
    """One state per (attribute, metric), as /metrics exports them: a search's cells fold into the worst
    one (a breach before none, then the bound furthest past the threshold's side); a gap is its own.

    >>> cell = lambda name, breached, bound: (DecisionKey("a&b", "subgroup_tpr_difference", name),
    ...                                       DecisionState(breached, bound, 0.1, None))
    >>> worst_per_metric(dict([cell("x&y", False, 0.3), cell("x&z", True, 0.2), cell("w&z", True, 0.15)]))
    {('a&b', 'subgroup_tpr_difference'): DecisionState(breached=True, bound=0.2, threshold=0.1, evidence=None)}
    """
    worst: dict[tuple[str, str], DecisionState] = {}
    for key, state in states.items():
        is_ratio = key.metric.endswith("ratio")
        value = state.bound
        previous = worst.get((key.attribute, key.metric))
        if previous is None or (state.breached and not previous.breached) or (
            state.breached == previous.breached
            and not math.isnan(value)
            and (math.isnan(previous.bound) or (value < previous.bound if is_ratio else value > previous.bound))
        ):
            worst[(key.attribute, key.metric)] = state
    return worst


def pair_weights(held: np.ndarray, slot: np.ndarray, capacity: int) -> np.ndarray:
    """(sequences, groups, groups) shares of each sequence's error for the pairs of the
    groups with slot indices ``slot``, out of ``capacity`` slots (a group with itself: 0).
    The pairs of the ``held`` slots a sequence started with share all but
    ``NEW_GROUP_SHARE``; a sequence that held none (or all) splits evenly.

    >>> w = pair_weights(np.array([0, 3]), np.arange(5), capacity=5)  # 10 pairs
    >>> [round(float(v), 4) for v in (w[0, 0, 1], w[1, 0, 1], w[1, 0, 4], w[1].sum() / 2)]  # pairs counted twice
    [0.1, 0.3, 0.0143, 1.0]
    """
    pairs = capacity * (capacity - 1) // 2
    known = held * (held - 1) // 2
    old = slot[None, :] < held[:, None]
    both = old[:, :, None] & old[:, None, :]
    split = ((known > 0) & (known < pairs))[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where(split, np.where(both, (1 - NEW_GROUP_SHARE) / known[:, None, None],
                                           NEW_GROUP_SHARE / (pairs - known)[:, None, None]), 1.0 / max(pairs, 1))
    diagonal = np.arange(slot.size)
    weights[:, diagonal, diagonal] = 0.0
    return weights


def cell_weights(held: np.ndarray, slot: np.ndarray, capacity: int) -> np.ndarray:
    """(sequences, cells) shares of each sequence's error for the searched cells with slot
    indices ``slot`` (each compared with its rest), split as ``pair_weights`` splits pairs.

    >>> cell_weights(np.array([0, 2]), np.arange(4), capacity=4).tolist()
    [[0.25, 0.25, 0.25, 0.25], [0.45, 0.45, 0.05, 0.05]]
    """
    held = np.minimum(held, capacity)[:, None]
    split = (held > 0) & (held < capacity)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(split, np.where(slot[None, :] < held, (1 - NEW_GROUP_SHARE) / held,
                                        NEW_GROUP_SHARE / (capacity - held)), 1.0 / max(capacity, 1))


def centred_prior(successes: np.ndarray, trials: np.ndarray, per_trial) -> tuple[np.ndarray, np.ndarray]:
    """(centre, strength) of blocks' priors from a group's counts in the window before each
    block (``Accumulator.centre_rows``): centred on its rate there, weighing ``per_trial``
    prior trials per trial it had
    (none below ``MIN_CENTRE_TRIALS``: the prior is Jeffreys alone).

    >>> centre, strength = centred_prior(np.array([30.0, 2.0]), np.array([100.0, 10.0]), 0.5)
    >>> centre.round(3).tolist(), strength.tolist()
    ([0.302, 0.227], [50.0, 0.0])
    """
    centre = (successes + 0.5) / (trials + 1.0)
    return centre, np.where(trials >= MIN_CENTRE_TRIALS, trials * per_trial, 0.0)


def _top_pairs(score: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(accumulators, rates, i, j) mask of the since-start sequence's best-scoring pair
    per rate among ``mask``: its bound is exported even when nothing can breach."""
    top = np.zeros(mask.shape, dtype=bool)
    filled = np.where(mask[0], np.nan_to_num(score[0], nan=-np.inf, posinf=np.inf), -np.inf)
    for m in range(mask.shape[1]):
        if mask[0, m].any():
            i, j = np.unravel_index(np.argmax(filled[m]), filled[m].shape)
            top[0, m, i, j] = True
    return top


class PairBatch:
    """Pair bounds requested by every attribute of a check, computed in one call per kind
    (a root search costs the same few dozen numpy passes whatever its size)."""

    def __init__(self) -> None:
        self._parts: dict[str, list[tuple[np.ndarray, ...]]] = {"difference": [], "ratio": []}
        self._sizes = {"difference": 0, "ratio": 0}
        self._results: dict[str, np.ndarray] = {}

    def add(self, kind: str, x1, n1, x2, n2, alpha, prior1, prior2) -> tuple[str, int, int]:
        """Pairs to bound; ``prior1``, ``prior2``: (centre, strength) arrays (``confseq.log_marginal``)."""
        start = self._sizes[kind]
        self._parts[kind].append((x1, n1, x2, n2, alpha, *prior1, *prior2))
        self._sizes[kind] += len(x1)
        return kind, start, self._sizes[kind]

    def run(self) -> None:
        bound = {"difference": pair_difference_lower, "ratio": pair_ratio_lower}
        for kind, parts in self._parts.items():
            if self._sizes[kind]:
                x1, n1, x2, n2, alpha, c1, s1, c2, s2 = (np.concatenate(column) for column in zip(*parts))
                self._results[kind] = bound[kind](x1, n1, x2, n2, alpha, (c1, s1), (c2, s2))

    def result(self, handle: tuple[str, int, int]) -> np.ndarray:
        kind, start, stop = handle
        return self._results[kind][start:stop] if stop > start else np.zeros(0)


_DEFAULTS = MonitorConfig()


class BreachMonitor:
    """Anytime-valid breach decisions for one model.

    >>> monitor = BreachMonitor("m", thresholds=lambda attribute, metric: 0.8 if metric.endswith("ratio")
    ...                         else 0.1, attribute_budget=1, check_events=500)
    >>> rng = np.random.default_rng(0)
    >>> codes = {"sex": rng.integers(0, 2, 20_000)}
    >>> prediction = (rng.random(20_000) < np.where(codes["sex"] == 1, 0.6, 0.3)).astype(np.int64)
    >>> onsets = monitor.observe(codes, prediction, np.full(20_000, -1), {"sex": ["F", "M"]},
    ...                          np.arange(20_000), np.zeros(20_000))
    >>> [(o.metric, o.groups) for o in onsets]
    [('demographic_parity_difference', ['M', 'F']), ('demographic_parity_ratio', ['F', 'M'])]
    """

    def __init__(
        self,
        model: str,
        *,
        thresholds,  # callable (attribute, metric) -> threshold
        attribute_budget: int,
        subgroup_attributes: list[str] = (),
        # The defaults are MonitorConfig's (one place): what the pipeline passes when nothing is configured.
        family_error: float = _DEFAULTS.family_error,
        min_group_size: int = _DEFAULTS.min_group_size,
        max_decision_groups: int = _DEFAULTS.max_decision_groups,
        max_subgroup_cells: int = _DEFAULTS.max_subgroup_cells,
        block_events: int = _DEFAULTS.decision_block_events,
        scales: int | None = _DEFAULTS.decision_scales,  # None: a new scale at every doubling, without a cap
        staggers: int = _DEFAULTS.decision_staggers,
        lifetime: int = _DEFAULTS.decision_block_lifetime,
        check_events: int = _DEFAULTS.decision_check_events,
        check_seconds: float | None = None,  # None: on events only (the pipeline passes decision_check_seconds)
    ) -> None:
        self.model = model
        self.thresholds = thresholds
        self.min_group_size = min_group_size
        self.max_decision_groups = max_decision_groups
        self.max_subgroup_cells = max_subgroup_cells
        self.check_events = check_events
        self.check_seconds = check_seconds
        self.subgroup_attributes = set(subgroup_attributes)
        search_share = 0.5 if subgroup_attributes else 0.0
        self.attribute_alpha = family_error * (1 - search_share) / max(attribute_budget, 1)
        self.subgroup_alpha = family_error * search_share / max(len(subgroup_attributes), 1)
        self.block_events = block_events
        self.max_scales = scales
        self.staggers = staggers
        self.lifetime = lifetime
        self.accumulators = [Accumulator(None)]
        self.scale_spending = "telescoping"  # SCALE_SHARES; snapshots from before it keep theirs
        self.block_spending = "log_telescoping"  # BLOCK_SHARES; the same
        self.counts: dict[str, np.ndarray] = {}  # attribute -> (groups, 6) since start
        self._newest: dict[tuple[int, int], Accumulator] = {}  # (scale, offset) -> the copy's latest block
        self.scales = 0  # scales started so far
        self.slots: dict[str, dict[int, int]] = {}  # attribute -> group code -> slot
        self.clock = 0  # predictions of this model so far
        self._last_check = 0
        self._last_check_time: float | None = None
        self._checks = 0
        self.states: dict[DecisionKey, DecisionState] = {}
        self.active: dict[DecisionKey, bool] = {}
        self.onsets: list[Onset] = []
        self._cell_codes: dict[tuple[str, str], int] = {}  # (subgroup attribute, cell name) -> code
        self._grow(0)

    def _grow(self, clock: int) -> None:
        """Start every scale whose block length the stream has reached (scale 0 at once)."""
        while self.max_scales is None or self.scales < self.max_scales:
            length = self.block_events * 2**self.scales
            if self.scales > 0 and clock < length:
                break
            # Every copy's first block starts now, on the same counts: they are one sequence,
            # which spends all of their shares. The one that lives longest counts; the others
            # only mark where their copies' next blocks start.
            firsts = []
            for o in range(self.staggers):
                acc = self._start_block(length, (length * o) // self.staggers, self.scales, 1, clock)
                self._newest[(acc.scale, acc.offset)] = acc
                firsts.append(acc)
            longest = max(firsts, key=lambda acc: (acc.current + self.lifetime) * length - acc.offset)
            longest.copies = self.staggers
            self.accumulators.append(longest)
            self.scales += 1

    def _start_block(self, length: int, offset: int, scale: int, block: int, clock: int,
                     previous: Accumulator | None = None) -> Accumulator:
        """The ``block``-th block of the copy (``length``, ``offset``), starting at ``clock``:
        it counts from the since-start counts of this moment, its pair split is fixed by the
        slots held now, and its prior is centred on the rates seen in the ``previous`` block
        of its copy until now (since start, for a first block). Recent rates rather than
        since-start ones: after a change, the next blocks' priors are centred on the new
        rates, not on a mean diluted by the history before it."""
        base = {a: r.copy() for a, r in self.counts.items()}
        acc = Accumulator(length, offset, scale, block, base=base, base_clock=clock,
                          base_slots={a: len(s) for a, s in self.slots.items()}, centre=base, centre_span=clock)
        if previous is not None:
            acc.centre = {a: _since(r, previous.base.get(a)) for a, r in base.items()}
            acc.centre_span = clock - previous.base_clock
        acc.current = acc.block_of(clock)
        return acc

    # -- observations -------------------------------------------------------
    def observe(self, codes: dict[str, np.ndarray], prediction: np.ndarray, label: np.ndarray,
                group_names: dict[str, list[str]], positions: np.ndarray, timestamps: np.ndarray,
                now: float | None = None) -> list[Onset]:
        """Predictions of one batch (labels, if inline) in input order; ``now``:
        the caller's clock in seconds, for ``check_seconds``."""
        start, n = self.clock, prediction.size
        self._grow(start)
        self.clock += n
        # Cut the batch where any copy starts a new block (its newest block marks where,
        # whether it counts or stands for a first block pooled into another copy's), count
        # each piece once, and hand every sequence the pieces on each side of its cut.
        cuts = sorted({
            int(b) for acc in self._newest.values()
            for b in range(((start + acc.offset) // acc.length + 1) * acc.length - acc.offset, start + n,
                           acc.length)
        })
        edges = [start, *cuts, start + n]
        pieces = []  # (first clock, {attribute: rows})
        for lo, hi in zip(edges[:-1], edges[1:]):
            part = slice(lo - start, hi - start)
            pieces.append((lo, {a: observation_rows(c[part], prediction[part], label[part], len(group_names[a]))
                                for a, c in codes.items()}))
        self._add_pieces(pieces)
        self._assign_slots(group_names)
        if self._due(now):
            return self.check(group_names, int(positions[-1]) if positions.size else 0)
        return []

    def observe_counts(self, delta: dict[str, np.ndarray], predictions: int, group_names: dict[str, list[str]],
                       position: int, now: float | None = None) -> list[Onset]:
        """Counts instead of events: ``delta`` (attribute -> (groups, 6) rows) added by
        ``predictions`` new predictions (and any labels). They count in the blocks that
        are current at their first prediction: a sequence whose block would end inside
        them restarts after them instead (they are never split)."""
        self._grow(self.clock)
        first = self.clock
        self.clock += predictions
        self._add_pieces([(first, delta)])
        self._assign_slots(group_names)
        if self._due(now):
            return self.check(group_names, position)
        return []

    def _add_pieces(self, pieces) -> None:
        for first, rows in pieces:
            self._roll(first)
            for attribute, delta in rows.items():
                self._count(attribute, delta)

    def _count(self, attribute: str, delta: np.ndarray) -> None:
        rows = self.counts.get(attribute)
        if rows is None or rows.shape[0] < delta.shape[0]:
            grown = np.zeros((delta.shape[0], 6))
            if rows is not None:
                grown[: rows.shape[0]] = rows
            rows = self.counts[attribute] = grown
        rows[: delta.shape[0]] += delta

    def _roll(self, clock: int) -> None:
        """Start each copy's new block if ``clock`` lies past its newest one, and
        retire blocks ``lifetime`` block lengths old. A block keeps counting after
        its successor starts (anytime-valid: no extra error), so a change just
        after a block's start is still seen by that block, with no wait for a fresh one."""
        started = False
        for key, newest in self._newest.items():
            if newest.block_of(clock) != newest.current:
                self._newest[key] = self._start_block(newest.length, newest.offset, newest.scale, newest.block + 1,
                                                      clock, previous=newest)
                self.accumulators.append(self._newest[key])
                started = True
        if started:
            self.accumulators = [acc for acc in self.accumulators if acc.length is None
                                 or self._newest[(acc.scale, acc.offset)].current - acc.current < self.lifetime]

    def _due(self, now: float | None) -> bool:
        """A check is due every check_events predictions, or check_seconds on the caller's clock."""
        by_count = self.clock - self._last_check >= self.check_events
        by_time = (self.check_seconds is not None and now is not None and self._last_check_time is not None
                   and now - self._last_check_time >= self.check_seconds)
        if self._last_check_time is None and now is not None:
            self._last_check_time = now
        if by_count or by_time:
            self._last_check = self.clock
            if now is not None:
                self._last_check_time = now
            return True
        return False

    def observe_labels(self, codes: dict[str, np.ndarray], prediction: np.ndarray, label: np.ndarray,
                       group_names: dict[str, list[str]]) -> None:
        """Late labels: they count in each sequence's current block."""
        if prediction.size == 0:
            return
        for attribute, c in codes.items():
            delta = observation_rows(c, prediction, label, len(group_names[attribute]), with_predictions=False)
            self._count(attribute, delta)

    def _assign_slots(self, group_names: dict[str, list[str]]) -> None:
        for attribute, rows in self.counts.items():
            slots = self.slots.setdefault(attribute, {})
            cap = self.max_subgroup_cells if attribute in self.subgroup_attributes else self.max_decision_groups
            if len(slots) >= cap:
                continue
            ready = np.flatnonzero(rows[:, SEL_N] >= self.min_group_size)
            for code in ready[np.argsort(-rows[ready, SEL_N], kind="stable")].tolist():
                if code not in slots and len(slots) < cap:
                    slots[code] = len(slots)

    # -- decisions --------------------------------------------------------------
    def _alpha(self, attribute: str, acc: Accumulator) -> float:
        """The level of ``acc``'s sequences of one rate of ``attribute``, before its split
        over the pairs a decision can compare (every pair of group slots; for the
        subgroup search, each cell with its rest): ``Accumulator.pair_weights``."""
        base = self.subgroup_alpha if attribute in self.subgroup_attributes else self.attribute_alpha
        return base / len(RATES) * acc.share(self.staggers, self.scale_spending, self.block_spending)

    def _counts(self, attribute: str, n_groups: int):
        """Arrays (accumulators, groups, rates) of successes and trials, the mask of
        slotted groups with at least min_group_size trials, (accumulators,) levels, and
        (accumulators, groups, rates) successes and trials in the windows that centre the
        blocks' priors (``Accumulator.centre_rows``), with the prior strengths per trial
        of them (``Accumulator.prior_strength``)."""
        accs = self.accumulators
        rows = np.zeros((len(accs), n_groups, 6))
        base = np.zeros((len(accs), n_groups, 6))
        for a, acc in enumerate(accs):
            r = acc.rows(self.counts, attribute)
            if r is not None:
                rows[a, : r.shape[0]] = r[:n_groups]
            b = acc.centre_rows(attribute)
            if b is not None:
                base[a, : b.shape[0]] = b[:n_groups]
        x, n = rows[..., SUCCESS_COLUMNS], rows[..., TRIAL_COLUMNS]
        x0, n0 = base[..., SUCCESS_COLUMNS], base[..., TRIAL_COLUMNS]
        slotted = np.zeros(n_groups, dtype=bool)
        slotted[[c for c in self.slots.get(attribute, {}) if c < n_groups]] = True
        eligible = slotted[None, :, None] & (n >= self.min_group_size)
        alpha = np.array([self._alpha(attribute, acc) for acc in accs])
        per_trial = np.array([acc.prior_strength(self.lifetime) for acc in accs])
        return x, n, eligible, alpha, (x0, n0, per_trial)

    def _shares(self, attribute: str, codes) -> np.ndarray:
        """Each sequence's split of its level over the groups ``codes`` of ``attribute``:
        (sequences, groups, groups) pair shares, or for the subgroup search (sequences,
        cells) cell shares (``pair_weights``, ``cell_weights``)."""
        slots = self.slots.get(attribute, {})
        slot = np.array([slots.get(c, len(slots)) for c in codes], dtype=np.int64)
        held = np.array([acc.held(attribute) for acc in self.accumulators])
        if attribute in self.subgroup_attributes:
            return cell_weights(held, slot, self.max_subgroup_cells)
        return pair_weights(held, slot, self.max_decision_groups)

    def _ratio_threshold(self, attribute: str) -> float:
        return self.thresholds(attribute, "demographic_parity_ratio")

    def check(self, group_names: dict[str, list[str]], position: int) -> list[Onset]:
        """Decide every attribute's gaps (and, every other check, the subgroup search).

        Bounds cost a root search each, so every attribute first names the pairs whose
        bounds can change a decision, and all of them are computed in one vectorised
        call: pairs whose point estimates already breach a threshold (no bound can
        breach where the estimate does not), every pair where a breach is active (to
        clear it), and the since-start sequence's top pair (the exported bound)."""
        self._checks += 1
        # The search has many more cells than the attributes have groups: it is
        # checked at every other look, which halves its cost for half a look of delay.
        search_now = self._checks % 2 == 1
        batch = PairBatch()
        finishers = []
        for attribute, names in group_names.items():
            if attribute not in self.counts or len(names) < 2:
                continue
            if attribute in self.subgroup_attributes:
                if search_now:
                    finishers.append(self._plan_subgroups(attribute, names, batch))
            else:
                finishers.append(self._plan_gaps(attribute, names, batch))
        batch.run()
        onsets: list[Onset] = []
        for finish in finishers:
            onsets += finish(position)
        self.onsets += onsets
        return onsets

    def _decide(self, key: DecisionKey, evidence: Evidence | None, threshold: float, is_ratio: bool, position: int,
                groups) -> Onset | None:
        if evidence is None:
            self.states[key] = DecisionState(False, math.nan, threshold, None)
            return None
        breached = evidence.statistic < threshold if is_ratio else evidence.statistic > threshold
        cleared = evidence.clear > threshold if is_ratio else evidence.clear < threshold
        was = self.active.get(key, False)
        self.states[key] = DecisionState(breached or (was and not cleared), evidence.statistic, threshold, evidence)
        if breached and not was:
            self.active[key] = True
            return Onset(self.model, key.attribute, key.metric, position, evidence.value, evidence.lower,
                         evidence.upper, threshold, groups, evidence.window)
        if was and cleared and not breached:
            self.active[key] = False
        return None

    def _plan_gaps(self, attribute: str, names: list[str], batch: PairBatch):
        """Request the pair bounds that can change this attribute's gap decisions; return
        the function that decides once they are computed.

        Every entry is (accumulator a, rate m, i, j): the lower bound of p_i - p_j
        (difference metrics) or of p_i / p_j (the ratio), i != j."""
        x, n, eligible, alpha, (x0, n0, per_trial) = self._counts(attribute, len(names))
        # Only slotted groups take part: at most max_decision_groups, whatever the attribute holds.
        slotted = np.array(sorted(c for c in self.slots.get(attribute, {}) if c < len(names)), dtype=np.int64)
        x, n, eligible = x[:, slotted], n[:, slotted], eligible[:, slotted]
        centre, strength = centred_prior(x0[:, slotted], n0[:, slotted], per_trial[:, None, None])
        weights = self._shares(attribute, slotted.tolist())
        names = [names[c] for c in slotted.tolist()]
        n_acc, n_groups = x.shape[0], x.shape[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(eligible, x / n, np.nan)
        a_, m_, i_, j_ = np.meshgrid(np.arange(n_acc), np.arange(len(RATES)), np.arange(n_groups),
                                     np.arange(n_groups), indexing="ij")
        both = eligible[a_, i_, m_] & eligible[a_, j_, m_] & (i_ != j_)
        pi, pj = p[a_, i_, m_], p[a_, j_, m_]
        with np.errstate(invalid="ignore"):
            diff = pi - pj
        tau = np.array([self.thresholds(attribute, SUBGROUP_METRICS[m]) for m in RATES])
        active = np.array([any(self.active.get(DecisionKey(attribute, metric), False) for metric in RATE_USERS[r]
                               if not metric.endswith("ratio")) for r in RATES])
        level = alpha[a_] * weights[a_, i_, j_]
        # A bound costs a root search: screen first. The pair's bound lies below
        # d - sqrt(2 (log(1/level) + regret) (v_i/n_i + v_j/n_j)) (normal approximation),
        # so a pair whose d - sqrt(log(1/level) (v_i/n_i + v_j/n_j)) is not beyond the
        # threshold cannot breach: it is skipped (a skip can only delay, never cause, a breach).
        with np.errstate(divide="ignore", invalid="ignore"):
            var = np.where(eligible, p * (1 - p) / n, np.nan)
            spread = np.sqrt(np.log(1 / level) * (var[a_, i_, m_] + var[a_, j_, m_]))
        # The approximation fails for a few events in a group (or its complement): those
        # pairs are screened on their point gap alone.
        few = np.minimum(np.minimum(x, n - x)[a_, i_, m_], np.minimum(x, n - x)[a_, j_, m_]) < 10
        top = _top_pairs(diff - spread, both)  # the pair likeliest to have the best bound
        # While a breach is active, every pair of an accumulator whose point gaps are all
        # inside the threshold is computed: only such an accumulator can clear it, and only
        # if it holds every group the since-start counts hold (a block without one of the
        # breaching groups says nothing about their gap).
        same_groups = np.all(eligible == eligible[:1], axis=1) & (eligible.sum(axis=1) >= 2)  # (accumulators, rates)
        with np.errstate(invalid="ignore"):
            inside = np.all(~both | (diff <= tau[m_]), axis=(2, 3)) & same_groups  # (accumulators, rates)
        clearable = inside & active[None, :]
        with np.errstate(invalid="ignore"):
            screened = np.where(few, diff > tau[m_], diff - spread > tau[m_])
        want_diff = both & (screened | clearable[a_, m_] | top)
        want_diff |= np.swapaxes(want_diff, 2, 3)  # each pair's other side: its upper bound
        ratio_tau = self._ratio_threshold(attribute)
        ratio_active = self.active.get(DecisionKey(attribute, "demographic_parity_ratio"), False)
        sel = m_ == RATES.index("selection_rate")
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(pi > 0, pj / pi, np.inf)
            log_spread = np.sqrt(np.log(1 / level) * np.where(
                both, (1 - pi) / (pi * n[a_, i_, m_]) + (1 - pj) / (pj * n[a_, j_, m_]), np.inf))
            ratio_screen = ((pj == 0) & (pi > 0)) | np.where(few, ratio < ratio_tau,
                                                               np.log(ratio) + log_spread < np.log(ratio_tau))
            ratio_inside = np.all(~(both & sel) | (ratio >= ratio_tau), axis=(2, 3)) & same_groups
            ratio_top = _top_pairs(-(np.log(ratio) + log_spread), both & sel)
        ratio_clearable = ratio_inside & ratio_active
        # Ratio entries: lower bounds of p_i / p_j; 1 / that bounds p_j / p_i from above,
        # which breaches when the point ratio p_j / p_i is already below the threshold.
        want_ratio = both & sel & (ratio_screen | ratio_clearable[a_, m_] | ratio_top)
        want_ratio |= np.swapaxes(want_ratio, 2, 3)
        def pairs(want):
            """The counts, levels and priors of the wanted (i, j) entries."""
            i, j = (a_[want], i_[want], m_[want]), (a_[want], j_[want], m_[want])
            return (x[i], n[i], x[j], n[j], level[want], (centre[i], strength[i]), (centre[j], strength[j]))

        diff_handle = batch.add("difference", *pairs(want_diff))
        ratio_handle = batch.add("ratio", *pairs(want_ratio))

        def finish(position: int) -> list[Onset]:
            lower_diff = np.full(want_diff.shape, np.nan)
            lower_diff[want_diff] = batch.result(diff_handle)
            lower_ratio = np.full(want_ratio.shape, np.nan)
            lower_ratio[want_ratio] = batch.result(ratio_handle)
            onsets = []
            for metric, rates in GAP_RATES.items():
                is_ratio = metric.endswith("ratio")
                threshold = self.thresholds(attribute, metric)
                evidence, pair = (self._ratio_evidence(lower_ratio, p, ratio_clearable) if is_ratio
                                  else self._difference_evidence(lower_diff, p, [RATES.index(r) for r in rates],
                                                                 clearable))
                if evidence is not None:
                    evidence = Evidence(**{**asdict(evidence), "groups": (names[pair[0]], names[pair[1]])})
                onset = self._decide(DecisionKey(attribute, metric), evidence, threshold, is_ratio, position,
                                     None if pair is None else [names[pair[0]], names[pair[1]]])
                if onset:
                    onsets.append(onset)
            return onsets

        return finish

    def _difference_evidence(self, lower: np.ndarray, p: np.ndarray, rates: list[int], complete: np.ndarray):
        """The best pair over the metric's rates and every accumulator: (Evidence, (i, j)).

        ``lower[a, m, i, j]``: lower bound of p_i - p_j; the upper bound of p_i - p_j
        is -lower[a, m, j, i]. ``complete[a, m]``: every pair of that accumulator was
        computed; only those can clear a breach (every pair's upper bound inside)."""
        part = lower[:, rates]
        if np.all(np.isnan(part)):
            return None, None
        a, r, i, j = np.unravel_index(np.nanargmax(part), part.shape)
        m = rates[r]
        stat = float(part[a, r, i, j])
        upper_of_pair = -lower[a, m, j, i]
        flat = np.where(np.isnan(part), np.inf, part).reshape(part.shape[0], -1)
        gap_upper = np.where(complete[:, rates].all(axis=1), -flat.min(axis=1), np.inf)
        return Evidence(stat, float(p[a, i, m] - p[a, j, m]), stat, float(upper_of_pair), None,
                        self.accumulators[a].name, float(np.min(gap_upper))), (int(i), int(j))

    def _ratio_evidence(self, lower: np.ndarray, p: np.ndarray, complete: np.ndarray):
        """The best pair for the parity ratio: the least upper bound of p_j / p_i,
        which is 1 / lower[a, m, i, j] (the lower bound of p_i / p_j)."""
        m = RATES.index("selection_rate")
        part = lower[:, m]
        if np.all(np.isnan(part)):
            return None, None
        a, i, j = np.unravel_index(np.nanargmax(part), part.shape)
        best_lower = float(part[a, i, j])
        stat = 1.0 / best_lower if best_lower > 0 else math.inf
        reverse = lower[a, m, j, i]  # lower bound of p_j / p_i
        with np.errstate(divide="ignore", invalid="ignore"):
            value = float(p[a, j, m] / p[a, i, m]) if p[a, i, m] > 0 else math.inf
        flat = np.where(np.isnan(part), np.inf, part).reshape(part.shape[0], -1)
        least_lower = np.where(complete[:, m], flat.min(axis=1), -np.inf)
        return Evidence(stat, value, float(reverse) if not np.isnan(reverse) else 0.0, stat, None,
                        self.accumulators[a].name, float(np.max(least_lower))), (int(j), int(i))

    def _plan_subgroups(self, attribute: str, names: list[str], batch: PairBatch):
        """Each cell against the rest of the stream: both lower bounds of the difference,
        for every cell of the since-start sequence and, in blocks, where the point
        difference already breaches or a breach is active."""
        x, n, eligible, alpha, (x0, n0, per_trial) = self._counts(attribute, len(names))
        rest_x, rest_n = x.sum(axis=1, keepdims=True) - x, n.sum(axis=1, keepdims=True) - n
        ok = eligible & (rest_n >= self.min_group_size)
        with np.errstate(divide="ignore", invalid="ignore"):
            diff = x / n - rest_x / rest_n
        tau = np.array([self.thresholds(attribute, SUBGROUP_METRICS[m]) for m in RATES])
        level = np.broadcast_to(alpha[:, None, None] * self._shares(attribute, range(len(names)))[:, :, None],
                                x.shape)
        # The same screen as the gaps' (a skipped cell cannot breach at this check); every
        # accumulator of an active cell (to clear it); and the since-start sequence's
        # widest cell per rate (the exported bound).
        with np.errstate(divide="ignore", invalid="ignore"):
            spread = np.sqrt(np.log(1 / level) * (x / n * (1 - x / n) / n + rest_x / rest_n * (1 - rest_x / rest_n)
                                                  / rest_n))
        widest = np.zeros(x.shape, dtype=bool)
        for m in range(len(RATES)):
            if ok[0, :, m].any():
                score = np.where(ok[0, :, m], np.abs(diff[0, :, m]) - spread[0, :, m], -np.inf)
                widest[0, int(np.argmax(np.nan_to_num(score, nan=-np.inf))), m] = True
        want = ok & ((np.abs(diff) - spread > tau) | self._active_cells(attribute, len(names)) | widest)
        # Each side's prior is centred on its own rate in the window before the block (the rest's: the other cells').
        strength = np.broadcast_to(per_trial[:, None, None], x.shape)[want]
        cell_prior = centred_prior(x0[want], n0[want], strength)
        rest_prior = centred_prior((x0.sum(axis=1, keepdims=True) - x0)[want],
                                   (n0.sum(axis=1, keepdims=True) - n0)[want], strength)
        cell_over = batch.add("difference", x[want], n[want], rest_x[want], rest_n[want], level[want],
                              cell_prior, rest_prior)
        rest_over = batch.add("difference", rest_x[want], rest_n[want], x[want], n[want], level[want],
                              rest_prior, cell_prior)

        def finish(position: int) -> list[Onset]:
            # Cells not looked at this time leave no stale state behind (active ones always are).
            for key in [k for k in self.states if k.attribute == attribute and not self.active.get(k, False)]:
                del self.states[key]
            over, under = np.full(x.shape, np.nan), np.full(x.shape, np.nan)
            over[want], under[want] = batch.result(cell_over), batch.result(rest_over)
            evidence = np.fmax(over, under)  # (acc, group, rate): the gap's lower bound
            gap_upper = np.fmax(-under, -over)
            onsets = []
            for m, rate in enumerate(RATES):
                metric = CELL_METRICS[rate]
                threshold = self.thresholds(attribute, SUBGROUP_METRICS[rate])
                for g in np.flatnonzero(~np.all(np.isnan(evidence[:, :, m]), axis=0)).tolist():
                    a = int(np.nanargmax(evidence[:, g, m]))
                    ev = Evidence(float(evidence[a, g, m]), float(diff[a, g, m]), float(over[a, g, m]),
                                  float(-under[a, g, m]), None, self.accumulators[a].name,
                                  float(np.nanmin(gap_upper[:, g, m])))
                    groups = dict(zip(attribute.split("&"), names[g].split("&")))
                    self._cell_codes[(attribute, names[g])] = g
                    onset = self._decide(DecisionKey(attribute, metric, cell=names[g]), ev, threshold, False,
                                         position, groups)
                    if onset:
                        onsets.append(onset)
            return onsets

        return finish

    def _active_cells(self, attribute: str, n_groups: int) -> np.ndarray:
        """(1, groups, rates) mask of subgroup cells with an active breach."""
        mask = np.zeros((1, n_groups, len(RATES)), dtype=bool)
        for key, on in self.active.items():
            if on and key.attribute == attribute and key.cell is not None:
                code = self._cell_codes.get((attribute, key.cell))
                if code is not None and code < n_groups:
                    mask[0, code, RATES.index(CELL_RATES[key.metric])] = True
        return mask

    # -- state -----------------------------------------------------------------------
    def __setstate__(self, state: dict) -> None:
        """Unpickle. A state written before decisions had typed keys (snapshot format 2 as well) keyed them
        by ``(attribute, metric)`` and ``(attribute, "<metric>:<cell>")`` tuples: they become ``DecisionKey``s,
        so that such a snapshot restores with the same decisions. One written before scales spent
        2 / ((s+2)(s+3)) keeps spending 6 / (pi^2 (s+1)^2) for good, and one written before blocks
        spent ``block_share`` keeps 6 / (pi^2 k^2): its live blocks were started at those levels,
        and any mix of the two could spend more than the whole error."""
        self.__dict__.update({"scale_spending": "inverse_square", "block_spending": "inverse_square", **state})
        self.states = {_typed_key(k): v for k, v in self.states.items()}
        self.active = {_typed_key(k): v for k, v in self.active.items()}

    def rename_attributes(self, rename) -> None:
        """Rename every attribute of the state with ``rename(attribute) -> attribute`` (which must keep names
        distinct): for an owner that upgrades the names it gave its attributes."""
        self.counts = {rename(a): r for a, r in self.counts.items()}
        self.slots = {rename(a): s for a, s in self.slots.items()}
        for acc in {id(acc): acc for acc in (*self.accumulators, *self._newest.values())}.values():
            acc.base = {rename(a): r for a, r in acc.base.items()}
            acc.centre = {rename(a): r for a, r in acc.centre.items()}
            acc.base_slots = {rename(a): held for a, held in acc.base_slots.items()}
        self.states = {DecisionKey(rename(k.attribute), k.metric, k.cell): v for k, v in self.states.items()}
        self.active = {DecisionKey(rename(k.attribute), k.metric, k.cell): v for k, v in self.active.items()}
        self.onsets = [replace(o, attribute=rename(o.attribute)) for o in self.onsets]
        self._cell_codes = {(rename(a), cell): code for (a, cell), code in self._cell_codes.items()}
        self.subgroup_attributes = {rename(a) for a in self.subgroup_attributes}

    # -- merging ---------------------------------------------------------------------
    def totals(self, group_names: dict[str, list[str]]) -> Totals:
        """Since-start counts by group name: what a worker hands to ``MergedDecisions``."""
        rows = {}
        for attribute, r in self.counts.items():
            names = group_names.get(attribute, [])
            rows[attribute] = {names[g]: tuple(r[g].tolist()) for g in range(min(len(names), r.shape[0]))}
        return Totals(self.clock, rows)

    # -- reporting -----------------------------------------------------------------
    def subgroup_findings(self, group_names: dict[str, list[str]], limit: int = 20) -> list[dict]:
        """Subgroup vs rest, since start, with bounds at the search's corrected level; worst first."""
        alerted = {(o.attribute, o.metric, tuple(sorted(o.groups.items()))) for o in self.onsets
                   if isinstance(o.groups, dict)}
        findings = []
        for attribute in self.subgroup_attributes:
            names = group_names.get(attribute, [])
            if attribute not in self.counts or not names:
                continue
            x, n, eligible, alpha, _ = self._counts(attribute, len(names))
            x, n, eligible = x[0], n[0], eligible[0]
            rx, rn = x.sum(axis=0) - x, n.sum(axis=0) - n
            ok = eligible & (rn >= self.min_group_size)
            share = self._shares(attribute, range(len(names)))[0]  # the since-start sequence's cell shares
            level = np.broadcast_to((alpha[0] * share)[:, None], x.shape)[ok]
            lower = np.full(x.shape, np.nan)
            upper = np.full(x.shape, np.nan)
            lower[ok] = pair_difference_lower(x[ok], n[ok], rx[ok], rn[ok], level)
            upper[ok] = -pair_difference_lower(rx[ok], rn[ok], x[ok], n[ok], level)
            for g, name in enumerate(names):
                for m, rate in enumerate(RATES):
                    if not ok[g, m]:
                        continue
                    value, rest = x[g, m] / n[g, m], rx[g, m] / rn[g, m]
                    groups = dict(zip(attribute.split("&"), name.split("&")))
                    metric = CELL_METRICS[rate]
                    findings.append({
                        "groups": groups, "n": int(n[g, m]), "metric": rate, "value": float(value),
                        "rest": float(rest), "difference": float(value - rest),
                        "lower": float(lower[g, m]), "upper": float(upper[g, m]),
                        "alert": (attribute, metric, tuple(sorted(groups.items()))) in alerted,
                    })
        findings.sort(key=lambda f: (-f["alert"], -max(f["lower"], -f["upper"]), -abs(f["difference"])))
        return findings[:limit]


def _typed_key(key: tuple) -> DecisionKey:
    """A decision key as pickled before typed keys, as a ``DecisionKey`` (one already typed as itself)."""
    if isinstance(key, DecisionKey):
        return key
    attribute, metric = key
    name, separator, cell = metric.partition(":")
    return DecisionKey(attribute, name, cell) if separator and name in CELL_RATES else DecisionKey(attribute, metric)


@dataclass(frozen=True)
class Totals:
    """One worker's since-start decision counts: predictions, and per attribute
    and group name the six accumulator columns. Additive across workers."""

    predictions: int
    rows: dict[str, dict[str, tuple[float, ...]]]


def add_totals(parts: list[Totals]) -> Totals:
    """The sum of workers' totals, by group name."""
    rows: dict[str, dict[str, np.ndarray]] = {}
    for part in parts:
        for attribute, groups in part.rows.items():
            into = rows.setdefault(attribute, {})
            for name, row in groups.items():
                into[name] = into.get(name, 0) + np.asarray(row, dtype=float)
    return Totals(sum(p.predictions for p in parts),
                  {a: {g: tuple(r.tolist()) for g, r in groups.items()} for a, groups in rows.items()})


class MergedDecisions:
    """Anytime-valid decisions on the summed counts of several workers.

    Each ``update`` takes every worker's latest ``Totals`` (cumulative, e.g.
    scraped from their /metrics), sums them and feeds the increase since the
    last update to one ``BreachMonitor`` (same arguments as its constructor):
    its decisions are the ones a single worker that saw the whole stream, in
    steps of the updates, would make, at the full ``family_error``.

    >>> kwargs = dict(thresholds=lambda attribute, metric: 0.8 if metric.endswith("ratio") else 0.1,
    ...               attribute_budget=1, check_events=1)
    >>> merged = MergedDecisions("m", **kwargs)
    >>> a = Totals(100, {"sex": {"F": (50, 10, 0, 0, 0, 0), "M": (50, 30, 0, 0, 0, 0)}})
    >>> b = Totals(300, {"sex": {"F": (150, 30, 0, 0, 0, 0), "M": (150, 90, 0, 0, 0, 0)}})
    >>> [(o.metric, o.groups) for o in merged.update([a, b], position=400)]
    [('demographic_parity_difference', ['M', 'F']), ('demographic_parity_ratio', ['F', 'M'])]
    >>> merged.monitor.clock, merged.names
    (400, {'sex': ['F', 'M']})
    """

    def __init__(self, model: str, **kwargs) -> None:
        self.monitor = BreachMonitor(model, **kwargs)
        self.names: dict[str, list[str]] = {}
        self._codes: dict[str, dict[str, int]] = {}
        self._seen: dict[str, np.ndarray] = {}  # attribute -> (groups, 6) counts fed so far
        self._predictions = 0

    def update(self, workers: list[Totals], position: int | None = None, now: float | None = None) -> list[Onset]:
        total = add_totals(workers)
        new = total.predictions - self._predictions
        if new < 0:
            raise ValueError("totals went down: a worker restarted without its state")
        delta, latest, all_codes, all_names = {}, {}, {}, {}
        for attribute, groups in total.rows.items():
            codes = dict(self._codes.get(attribute, {}))
            names = list(self.names.get(attribute, []))
            for name in groups:
                if name not in codes:
                    codes[name] = len(names)
                    names.append(name)
            rows = np.zeros((len(names), 6))
            for name, row in groups.items():
                rows[codes[name]] = row
            seen = self._seen.get(attribute, np.zeros((0, 6)))
            delta[attribute] = rows.copy()
            delta[attribute][: seen.shape[0]] -= seen
            if (delta[attribute] < 0).any():
                # The total rose, but some group's counts fell (one worker restarted without its state while
                # the others grew past it), and a negative increase is no count. Nothing is changed.
                raise ValueError(f"totals went down: counts under {attribute!r} fell while the predictions rose")
            latest[attribute], all_codes[attribute], all_names[attribute] = rows, codes, names
        self._seen.update(latest)
        self._codes.update(all_codes)
        self.names.update(all_names)
        self._predictions = total.predictions
        if new == 0 and not any(d.any() for d in delta.values()):
            return []
        return self.monitor.observe_counts(delta, new, self.names,
                                           total.predictions - 1 if position is None else position, now)

    @property
    def states(self) -> dict[DecisionKey, DecisionState]:
        return self.monitor.states
