"""Breach decisions: is a gap beyond its threshold, with error control over the whole stream?

A gap of a fairness metric breaches its threshold when two groups' rates
differ by more than it. We declare a breach only when anytime-valid bounds
say so: for some pair of groups, the lower confidence-sequence bound of one
rate minus the upper bound of the other exceeds the threshold. If every
group's confidence sequence covers its rate at every moment, no breach is
ever declared falsely, so the family-wise error is the chance that any of
them fails, which Bonferroni keeps under ``family_error``:

- split over the attributes (and the subgroup search), then over the three
  rates that decisions use (selection rate, TPR, FPR) and the group slots
  of an attribute (``max_decision_groups``: the first groups to reach
  ``min_group_size``; later ones take no part);
- per group and rate, ``SINCE_START_SHARE`` goes to one sequence over
  everything since start, the rest to *restarting blocks*, so that a change
  is seen quickly and power grows with evidence: scale s (s = 0, 1, 2, ...,
  without a cap) restarts every ``block_events`` x 2^s predictions, with
  ``staggers`` offset copies; scale s is started once the stream holds one
  of its blocks, so a stream of n predictions holds O(log n) sequences.
  Scale s spends 6 / (pi^2 (s+1)^2) of the blocks' share, split over its
  copies, and the k-th block of a copy 6 / (pi^2 k^2) of that: the sums over
  s and k are 1, so the error holds over the endless stream. A persistent
  breach that a fixed-sample test would see after m post-change predictions
  falls, once 2^s >= about 2m / block_events, in a block that starts within
  half a block of the change and sees enough of it: it is declared with
  probability one, with a delay of a few m (docs/statistics.md).

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
from dataclasses import asdict, dataclass, field

import numpy as np

from fairwatch.monitor.confseq import confidence_sequence

# Accumulator columns: (trials, successes) of the selection rate, TPR and FPR.
SEL_N, SEL_X, TPR_N, TPR_X, FPR_N, FPR_X = range(6)
RATE_COLUMNS = {"selection_rate": (SEL_X, SEL_N), "tpr": (TPR_X, TPR_N), "fpr": (FPR_X, FPR_N)}
RATES = tuple(RATE_COLUMNS)
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
BLOCK_SPENDING = 6 / math.pi**2  # sum over k >= 1 of BLOCK_SPENDING / k^2 is 1
# Share of each (rate, group) error for the sequence over everything since
# start: it decides on breaches present from the beginning; the rest goes to
# the blocks, which see changes.
SINCE_START_SHARE = 0.25
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


@dataclass
class Accumulator:
    """Counts of one block sequence (``length`` None: since start, never restarts)."""

    length: int | None
    offset: int = 0
    scale: int = 0
    block: int = 1  # k, 1-based, blocks this sequence has filled: the k-th spends 6 / (pi^2 k^2)
    current: int = 0  # id of the block being filled, (clock + offset) // length
    rows: dict[str, np.ndarray] = field(default_factory=dict)

    def block_of(self, clock: int) -> int:
        return 0 if self.length is None else (clock + self.offset) // self.length

    def add(self, attribute: str, delta: np.ndarray) -> None:
        rows = self.rows.get(attribute)
        if rows is None or rows.shape[0] < delta.shape[0]:
            grown = np.zeros((delta.shape[0], 6))
            if rows is not None:
                grown[: rows.shape[0]] = rows
            rows = self.rows[attribute] = grown
        rows[: delta.shape[0]] += delta

    def move_to(self, clock: int) -> None:
        """Start a new block if ``clock`` lies past the current one."""
        block = self.block_of(clock)
        if block != self.current:
            self.rows.clear()
            self.current = block
            self.block += 1

    def share(self, staggers: int) -> float:
        """This sequence's current block's share of a (rate, group)'s error."""
        if self.length is None:
            return SINCE_START_SHARE
        scale_share = BLOCK_SPENDING / (self.scale + 1) ** 2
        return (1 - SINCE_START_SHARE) * scale_share / staggers * BLOCK_SPENDING / self.block**2

    @property
    def name(self) -> str:
        return "all" if self.length is None else f"block_{self.length}_{self.offset}"


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


def _top2(values: np.ndarray, largest: bool):
    """(best, second best) along the last axis, NaN-safe, with the best's index."""
    fill = -np.inf if largest else np.inf
    v = np.where(np.isnan(values), fill, values)
    order = np.argsort(-v if largest else v, axis=-1)
    best_i = order[..., 0]
    best = np.take_along_axis(v, order[..., :1], -1)[..., 0]
    second = np.take_along_axis(v, order[..., 1:2], -1)[..., 0] if v.shape[-1] > 1 else np.full(best.shape, fill)
    return best, second, best_i


def pair_extremes(lower: np.ndarray, upper: np.ndarray):
    """Over distinct groups i != j along the last axis:
    max(lower_i - upper_j) with its (i, j), and max(upper_i - lower_j)."""
    l1, l2, li = _top2(lower, True)
    u1, u2, ui = _top2(upper, False)
    same = li == ui
    alt_low = np.maximum(l2 - u1, l1 - u2)
    best = np.where(same, alt_low, l1 - u1)
    # Which pair: when the best groups coincide, re-pick.
    low_order = np.argsort(-np.where(np.isnan(lower), -np.inf, lower), axis=-1)
    up_order = np.argsort(np.where(np.isnan(upper), np.inf, upper), axis=-1)
    i = np.where(same & (l2 - u1 >= l1 - u2), low_order[..., min(1, lower.shape[-1] - 1)], li)
    j = np.where(same & (l2 - u1 < l1 - u2), up_order[..., min(1, upper.shape[-1] - 1)], ui)
    hu1, hu2, hui = _top2(upper, True)
    hl1, hl2, hli = _top2(lower, False)
    clear = np.where(hui == hli, np.maximum(hu2 - hl1, hu1 - hl2), hu1 - hl1)
    return best, i, j, clear


def pair_ratio_extremes(lower: np.ndarray, upper: np.ndarray):
    """Over distinct groups: min(upper_i / lower_j) with (i, j), and min(lower_i / upper_j)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        u1, u2, ui = _top2(upper, False)
        l1, l2, li = _top2(lower, True)
        ratio = lambda a, b: np.where(b > 0, a / np.where(b > 0, b, 1), np.inf)  # noqa: E731
        same = ui == li
        best = np.where(same, np.minimum(ratio(u2, l1), ratio(u1, l2)), ratio(u1, l1))
        up_order = np.argsort(np.where(np.isnan(upper), np.inf, upper), axis=-1)
        low_order = np.argsort(-np.where(np.isnan(lower), -np.inf, lower), axis=-1)
        i = np.where(same & (ratio(u2, l1) <= ratio(u1, l2)), up_order[..., min(1, upper.shape[-1] - 1)], ui)
        j = np.where(same & (ratio(u2, l1) > ratio(u1, l2)), low_order[..., min(1, lower.shape[-1] - 1)], li)
        cl1, cl2, cli = _top2(lower, False)
        cu1, cu2, cui = _top2(upper, True)
        clear = np.where(cli == cui, np.minimum(ratio(cl2, cu1), ratio(cl1, cu2)), ratio(cl1, cu1))
    return best, i, j, clear


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
        family_error: float = 0.05,
        min_group_size: int = 30,
        max_decision_groups: int = 20,
        max_subgroup_cells: int = 64,
        block_events: int = 8000,
        scales: int | None = None,  # None: a new scale at every doubling of the stream, without a cap
        staggers: int = 2,
        check_events: int = 1000,
        check_seconds: float | None = None,
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
        self.accumulators = [Accumulator(None)]
        self.scales = 0  # scales started so far
        self.slots: dict[str, dict[int, int]] = {}  # attribute -> group code -> slot
        self.clock = 0  # predictions of this model so far
        self._last_check = 0
        self._last_check_time: float | None = None
        self._checks = 0
        self.states: dict[tuple[str, str], DecisionState] = {}
        self.active: dict[tuple[str, str], bool] = {}
        self.onsets: list[Onset] = []
        self._cell_codes: dict[tuple[str, str], int] = {}  # (subgroup attribute, cell name) -> code
        self._grow(0)

    def _grow(self, clock: int) -> None:
        """Start every scale whose block length the stream has reached (scale 0 at once)."""
        while self.max_scales is None or self.scales < self.max_scales:
            length = self.block_events * 2**self.scales
            if self.scales > 0 and clock < length:
                break
            for o in range(self.staggers):
                acc = Accumulator(length, offset=(length * o) // self.staggers, scale=self.scales)
                acc.current = acc.block_of(clock)
                self.accumulators.append(acc)
            self.scales += 1

    # -- observations -------------------------------------------------------
    def observe(self, codes: dict[str, np.ndarray], prediction: np.ndarray, label: np.ndarray,
                group_names: dict[str, list[str]], positions: np.ndarray, timestamps: np.ndarray,
                now: float | None = None) -> list[Onset]:
        """Predictions of one batch (labels, if inline) in input order; ``now``:
        the caller's clock in seconds, for ``check_seconds``."""
        start, n = self.clock, prediction.size
        self._grow(start)
        self.clock += n
        # Cut the batch where any block sequence starts a new block, count each
        # piece once, and hand every sequence the pieces on each side of its cut.
        cuts = sorted({
            int(b) for acc in self.accumulators[1:]
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
        for acc in self.accumulators:
            for first, rows in pieces:
                acc.move_to(first)
                for attribute, delta in rows.items():
                    acc.add(attribute, delta)

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
            for acc in self.accumulators:
                acc.add(attribute, delta)

    def _assign_slots(self, group_names: dict[str, list[str]]) -> None:
        since_start = self.accumulators[0].rows
        for attribute, rows in since_start.items():
            slots = self.slots.setdefault(attribute, {})
            cap = self.max_subgroup_cells if attribute in self.subgroup_attributes else self.max_decision_groups
            if len(slots) >= cap:
                continue
            ready = np.flatnonzero(rows[:, SEL_N] >= self.min_group_size)
            for code in ready[np.argsort(-rows[ready, SEL_N], kind="stable")].tolist():
                if code not in slots and len(slots) < cap:
                    slots[code] = len(slots)

    # -- decisions --------------------------------------------------------------
    def _alpha(self, attribute: str, acc: Accumulator, cells: int) -> float:
        base = self.subgroup_alpha if attribute in self.subgroup_attributes else self.attribute_alpha
        cap = self.max_subgroup_cells if attribute in self.subgroup_attributes else self.max_decision_groups
        # rates x group slots (x2 for the subgroup search: each cell and its rest)
        return base / (len(RATES) * cap * cells) * acc.share(self.staggers)

    def _bounds(self, attribute: str, n_groups: int, with_rest: bool, everything: bool = False):
        """Arrays (accumulators, groups, rates) of x, n, lower, upper (and the same
        for each group's complement when ``with_rest``), for slotted groups with at
        least min_group_size trials, else NaN.

        Confidence sequences cost a root search each, so they are computed only
        where a decision can change: where the point estimates already breach
        the smallest threshold (no bound can breach where the estimate does
        not), where a breach is active (it needs bounds to clear), and always
        for the since-start accumulator (the exported bound). ``everything``
        computes them all (reports).
        """
        accs = self.accumulators
        rows = np.zeros((len(accs), n_groups, 6))
        for a, acc in enumerate(accs):
            r = acc.rows.get(attribute)
            if r is not None:
                rows[a, : r.shape[0]] = r[:n_groups]
        x = np.stack([rows[..., RATE_COLUMNS[m][0]] for m in RATES], axis=-1)
        n = np.stack([rows[..., RATE_COLUMNS[m][1]] for m in RATES], axis=-1)
        slotted = np.zeros(n_groups, dtype=bool)
        slotted[[c for c in self.slots.get(attribute, {}) if c < n_groups]] = True
        alpha = np.array([self._alpha(attribute, acc, 2 if with_rest else 1) for acc in accs])[:, None, None]
        alpha = np.broadcast_to(alpha, x.shape)
        eligible = slotted[None, :, None] & (n >= self.min_group_size)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(eligible, x / n, np.nan)
        tau = np.array([self.thresholds(attribute, SUBGROUP_METRICS[m]) for m in RATES])
        if with_rest:
            total_x, total_n = x.sum(axis=1, keepdims=True), n.sum(axis=1, keepdims=True)
            rest_x, rest_n = total_x - x, total_n - n
            rest_ok = eligible & (rest_n >= self.min_group_size)
            with np.errstate(divide="ignore", invalid="ignore"):
                gap = np.abs(p - rest_x / rest_n)
            need = everything | (gap > tau) | self._active_cells(attribute, n_groups)
            need = need & rest_ok
            need[0] |= rest_ok[0]
        else:
            filled_high, filled_low = np.where(np.isnan(p), -np.inf, p), np.where(np.isnan(p), np.inf, p)
            high, low = filled_high.max(axis=1), filled_low.min(axis=1)  # (acc, rate)
            with np.errstate(invalid="ignore", divide="ignore"):
                spread = high - low
                ratio = low / high
            possible = (spread > tau) | ((ratio < self._ratio_threshold(attribute)) & SELECTION_ONLY)
            active = np.array([any(self.active.get((attribute, metric), False) for metric in RATE_USERS[r])
                               for r in RATES])
            need = everything | possible | active[None, :]
            need[0] = True
            need = need[:, None, :] & eligible
        lower, upper = np.full(x.shape, np.nan), np.full(x.shape, np.nan)
        if need.any():
            lower[need], upper[need] = confidence_sequence(x[need], n[need], alpha[need])
        if not with_rest:
            return x, n, lower, upper, None
        rest_lower, rest_upper = np.full(x.shape, np.nan), np.full(x.shape, np.nan)
        if need.any():
            rest_lower[need], rest_upper[need] = confidence_sequence(rest_x[need], rest_n[need], alpha[need])
        return x, n, lower, upper, (rest_x, rest_n, rest_lower, rest_upper)

    def _ratio_threshold(self, attribute: str) -> float:
        return self.thresholds(attribute, "demographic_parity_ratio")

    def _active_cells(self, attribute: str, n_groups: int) -> np.ndarray:
        """(1, groups, rates) mask of subgroup cells with an active breach."""
        mask = np.zeros((1, n_groups, len(RATES)), dtype=bool)
        for (attr, key), on in self.active.items():
            if on and attr == attribute and ":" in key:
                metric, cell = key.split(":", 1)
                rate = metric[len("subgroup_"): -len("_difference")]
                code = self._cell_codes.get((attribute, cell))
                if code is not None and code < n_groups:
                    mask[0, code, RATES.index(rate)] = True
        return mask

    def check(self, group_names: dict[str, list[str]], position: int) -> list[Onset]:
        onsets: list[Onset] = []
        self._checks += 1
        # The search has many more cells than the attributes have groups: it is
        # checked at every other look, which halves its cost for half a look of delay.
        search_now = self._checks % 2 == 1
        for attribute, names in group_names.items():
            if attribute not in self.accumulators[0].rows or len(names) < 2:
                continue
            if attribute in self.subgroup_attributes:
                if search_now:
                    onsets += self._check_subgroups(attribute, names, position)
            else:
                onsets += self._check_gaps(attribute, names, position)
        self.onsets += onsets
        return onsets

    def _decide(self, key, evidence: Evidence | None, threshold: float, is_ratio: bool, position: int,
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
            return Onset(self.model, key[0], key[1], position, evidence.value, evidence.lower, evidence.upper,
                         threshold, groups, evidence.window)
        if was and cleared and not breached:
            self.active[key] = False
        return None

    def _check_gaps(self, attribute: str, names: list[str], position: int) -> list[Onset]:
        x, n, lower, upper, _ = self._bounds(attribute, len(names), with_rest=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = x / n
        onsets = []
        for metric, rates in GAP_RATES.items():
            is_ratio = metric.endswith("ratio")
            worst = math.inf if is_ratio else -math.inf
            candidates = []  # (statistic, accumulator, rate index, i, j)
            clear = np.full(len(self.accumulators), worst)  # per accumulator, over the metric's rates
            for r in rates:
                m = RATES.index(r)
                lo, up = lower[..., m], upper[..., m]
                usable = (~np.isnan(lo)).sum(axis=-1) >= 2
                if not usable.any():
                    clear[:] = -worst  # a rate without evidence: nothing is cleared
                    continue
                stat, i, j, rate_clear = (pair_ratio_extremes if is_ratio else pair_extremes)(lo, up)
                rate_clear = np.where(usable, rate_clear, -worst)
                clear = np.minimum(clear, rate_clear) if is_ratio else np.maximum(clear, rate_clear)
                for a in np.flatnonzero(usable).tolist():
                    candidates.append((float(stat[a]), a, m, int(i[a]), int(j[a])))
            if not candidates:
                onset = self._decide((attribute, metric), None, self.thresholds(attribute, metric), is_ratio,
                                     position, None)
                continue
            stat, a, m, gi, gj = (min if is_ratio else max)(candidates, key=lambda c: c[0])
            lo, up, p = lower[a, :, m], upper[a, :, m], rate[a, :, m]
            if is_ratio:
                value = p[gi] / p[gj] if p[gj] > 0 else math.inf
                bounds = (lo[gi] / up[gj], stat)
            else:
                value = p[gi] - p[gj]
                bounds = (stat, up[gi] - lo[gj])
            evidence = Evidence(stat, float(value), float(bounds[0]), float(bounds[1]), (names[gi], names[gj]),
                                self.accumulators[a].name,
                                float(np.max(clear) if is_ratio else np.min(clear)))
            onset = self._decide((attribute, metric), evidence, self.thresholds(attribute, metric), is_ratio,
                                 position, [names[gi], names[gj]])
            if onset:
                onsets.append(onset)
        return onsets

    def _check_subgroups(self, attribute: str, names: list[str], position: int) -> list[Onset]:
        x, n, lower, upper, rest = self._bounds(attribute, len(names), with_rest=True)
        rest_x, rest_n, rest_lower, rest_upper = rest
        with np.errstate(divide="ignore", invalid="ignore"):
            diff = x / n - rest_x / rest_n
        evidence = np.fmax(lower - rest_upper, rest_lower - upper)  # (acc, group, rate)
        onsets = []
        for m, rate in enumerate(RATES):
            metric = f"subgroup_{rate}_difference"
            threshold = self.thresholds(attribute, SUBGROUP_METRICS[rate])
            for g in np.flatnonzero(~np.all(np.isnan(evidence[:, :, m]), axis=0)).tolist():
                a = int(np.nanargmax(evidence[:, g, m]))
                stat = float(evidence[a, g, m])
                ev = Evidence(stat, float(diff[a, g, m]),
                              float(lower[a, g, m] - rest_upper[a, g, m]),
                              float(upper[a, g, m] - rest_lower[a, g, m]),
                              None, self.accumulators[a].name,
                              float(np.nanmin(np.fmax(upper[:, g, m] - rest_lower[:, g, m],
                                                      rest_upper[:, g, m] - lower[:, g, m]))))
                groups = dict(zip(attribute.split("&"), names[g].split("&")))
                self._cell_codes[(attribute, names[g])] = g
                onset = self._decide((attribute, f"{metric}:{names[g]}"), ev, threshold, False, position, groups)
                if onset:
                    onsets.append(Onset(onset.model, attribute, metric, onset.event_index, onset.value,
                                        onset.lower, onset.upper, onset.threshold, groups, onset.window))
        return onsets

    # -- merging ---------------------------------------------------------------------
    def totals(self, group_names: dict[str, list[str]]) -> Totals:
        """Since-start counts by group name: what a worker hands to ``MergedDecisions``."""
        rows = {}
        for attribute, r in self.accumulators[0].rows.items():
            names = group_names.get(attribute, [])
            rows[attribute] = {names[g]: tuple(r[g].tolist()) for g in range(min(len(names), r.shape[0]))}
        return Totals(self.clock, rows)

    # -- reporting -----------------------------------------------------------------
    def subgroup_findings(self, group_names: dict[str, list[str]], limit: int = 20) -> list[dict]:
        """Subgroup vs rest, since start, with bounds at the search's corrected level; worst first."""
        alerted = {(o.attribute, o.metric, tuple(sorted(o.groups.items()))) for o in self.onsets
                   if isinstance(o.groups, dict)}
        findings = []
        since_start = self.accumulators[0]
        for attribute in self.subgroup_attributes:
            names = group_names.get(attribute, [])
            if attribute not in since_start.rows or not names:
                continue
            x, n, lower, upper, (rx, rn, rl, ru) = self._bounds(attribute, len(names), with_rest=True,
                                                                everything=True)
            for g, name in enumerate(names):
                for m, rate in enumerate(RATES):
                    if np.isnan(lower[0, g, m]) or np.isnan(rl[0, g, m]):
                        continue
                    value, rest = x[0, g, m] / n[0, g, m], rx[0, g, m] / rn[0, g, m]
                    groups = dict(zip(attribute.split("&"), name.split("&")))
                    metric = f"subgroup_{rate}_difference"
                    findings.append({
                        "groups": groups, "n": int(n[0, g, m]), "metric": rate, "value": float(value),
                        "rest": float(rest), "difference": float(value - rest),
                        "lower": float(lower[0, g, m] - ru[0, g, m]), "upper": float(upper[0, g, m] - rl[0, g, m]),
                        "alert": (attribute, metric, tuple(sorted(groups.items()))) in alerted,
                    })
        findings.sort(key=lambda f: (-f["alert"], -max(f["lower"], -f["upper"]), -abs(f["difference"])))
        return findings[:limit]


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
    >>> merged.update([a, b], position=400)
    []
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
        delta = {}
        for attribute, groups in total.rows.items():
            codes = self._codes.setdefault(attribute, {})
            names = self.names.setdefault(attribute, [])
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
            self._seen[attribute] = rows
        self._predictions = total.predictions
        if new == 0 and not any(d.any() for d in delta.values()):
            return []
        return self.monitor.observe_counts(delta, new, self.names,
                                           total.predictions - 1 if position is None else position, now)

    @property
    def states(self) -> dict[tuple[str, str], DecisionState]:
        return self.monitor.states
