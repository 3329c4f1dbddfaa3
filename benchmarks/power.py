"""Power of the breach decisions: detection rate and delay by breach size, and false pages.

    python -m benchmarks.power [--quick] [--repeats 20] [--stationary 210] [--workers 2]
                               [--groups 15%,3%] [--deltas 0.02,...] [--first-seed 10000]

Streams have three attributes: A with groups of 45, 25, 15, 10, 3 and 2% of
traffic, B with 60/40, C with 50/30/20. Every prediction carries its label
(base rate 0.4). TPR and FPR are 0.75 and 0.5 plus a lift per group of A
and of B, spread evenly over 0.07 (A and B sit 0.03 inside the 0.1
thresholds of the demographic parity and equalized odds differences; C has
no gap; the parity ratio is about 0.88, inside 0.8).

Breach streams: from ``SHIFT_AT`` on, TPR and FPR of A's 15% (or 3%) group,
which has the top lift, rise until its selection rate, TPR and FPR sit
0.1 + delta above the lowest group of A (a seeded draw among the others):
the demographic parity and equalized odds differences are delta beyond
their thresholds (TPR is capped at 0.99, so for delta = 0.3 only the FPR gap
is the full 0.4; the parity ratio is crossed too from delta = 0.05 on).
Each runs until ``HORIZON`` events after the change, or its first breach
on A (or a subgroup of A).

Stationary streams (no false page allowed): a third with the gaps above,
a third "near-threshold" (A's gaps 0.09, 0.01 inside; B's 0.03), a third
with "group-mix drift" (A's gaps 0.07, B's 0.03; over the stream, A's 15%
group grows to 40% of traffic and B's mix turns from 60/40 to 30/70; every
group's rates stay fixed, so the gaps do not change). Every cell of the
subgroup search stays inside its threshold too (at most 0.096 from its
rest in the first kind, 0.083 and 0.076 in the others).

Methods, all looking every ``CHECK_EVERY`` = 4,000 events (the CLI's
``decision_check_events``), on the same streams:
- naive: a sliding 10,000-event window, Wilson interval per group,
  Newcombe interval for the (max, min) pair (Katz for the ratio), at 95%,
  a breach when the interval lies beyond the threshold;
- fairwatch: ``monitor.breach.BreachMonitor`` configured as the pipeline
  configures it for three attributes (family-wise error 0.05, the
  worst-subgroup search over A&B, A&C, B&C, blocks of 8,000 x 2^s);
- oracle: knows the change point and the breaching pair; at every look, a
  fixed-sample Newcombe interval on the post-change counts of that pair
  (selection rate, TPR, FPR: the first to breach). Two levels: 95% (one
  test, no correction), and "oracle at the family level": the per-comparison
  level fairwatch's family split leaves (the same Bonferroni over attributes,
  rates, groups and the subgroup search; none over time). Looking every 4,000
  events makes it optimistic, which is fine for a reference point;
- anytime-valid oracle ("oracle-av"): the same knowledge and level, but the
  pair confidence sequence fairwatch uses (Jeffreys priors), valid at every
  look however many: what validity at every moment costs by itself, even
  with the change point and the pair given.

Other seeds, same streams: ``--first-seed``; one row: ``--groups 15% --deltas
0.02 --stationary 0``.

Streams are simulated with numpy; every fairwatch decision goes through
``BreachMonitor.observe``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from scipy.stats import norm

from benchmarks.false_alarms import _pair_breaches  # the same naive per-look test
from fairwatch.monitor.breach import BreachMonitor
from fairwatch.monitor.confseq import pair_difference_lower
from fairwatch.monitor.gaps import katz_interval, newcombe_interval

SHARES = {"A": [0.45, 0.25, 0.15, 0.10, 0.03, 0.02], "B": [0.6, 0.4], "C": [0.5, 0.3, 0.2]}
TARGETS = {"15%": 2, "3%": 4}  # index of the shifted group of A
THRESHOLDS = {"demographic_parity_difference": 0.1, "equalized_odds_difference": 0.1,
              "demographic_parity_ratio": 0.8}
BASE_RATE, TPR0, FPR0 = 0.4, 0.75, 0.5
CHECK_EVERY = 4000
NAIVE_WINDOW = 10_000
FAMILY_ERROR = 0.05
DELTAS = (0.01, 0.02, 0.03, 0.05, 0.1, 0.3)
PAIRS = (("A", "B"), ("A", "C"), ("B", "C"))
# The per-comparison level of the pipeline's family for 3 attributes and the
# search: half of 0.05 over 3 attributes, 3 rates, 20 group slots, two-sided.
ORACLE_FAMILY_LEVEL = FAMILY_ERROR * 0.5 / 3 / (3 * 20)


def lifts(n_groups: int, spread: float) -> np.ndarray:
    return np.linspace(-spread / 2, spread / 2, n_groups)


def make_stream(seed: int, n: int, kind: str, target: int | None = None, delta: float = 0.0,
                shift_at: int | None = None):
    """(codes, prediction, label, lowest group of A) of one stream.

    kind: "stationary" (gaps 0.07), "near" (gaps 0.09), "drift" (gaps 0.07,
    shares of A and B drifting), "breach" (gaps 0.07, then ``delta`` beyond)."""
    rng = np.random.default_rng(seed)
    spread = 0.09 if kind == "near" else 0.07
    # B's gap: lifts add up in the cells of the subgroup search, so with both
    # A and B at 0.09, or with the drift moving the rest of a cell, a cell's
    # gap to its rest would pass 0.1 (a true breach, not a false page): B's
    # gap is 0.03 there, which keeps every searched cell at most 0.083 (near)
    # and 0.076 (drift) from its rest.
    spread_b = 0.03 if kind in ("near", "drift") else spread
    codes = {}
    if kind == "drift":
        t = np.arange(n) / n  # shares move linearly from start to end
        start_a, end_a = np.array(SHARES["A"]), np.array([0.30, 0.15, 0.40, 0.10, 0.03, 0.02])
        start_b, end_b = np.array(SHARES["B"]), np.array([0.3, 0.7])
        for attribute, (s0, s1) in (("A", (start_a, end_a)), ("B", (start_b, end_b))):
            cumulative = np.cumsum(s0)[None, :] * (1 - t[:, None]) + np.cumsum(s1)[None, :] * t[:, None]
            codes[attribute] = (rng.random(n)[:, None] > cumulative).sum(axis=1).clip(0, len(s0) - 1)
        codes["C"] = rng.choice(3, size=n, p=SHARES["C"])
    else:
        for attribute, shares in SHARES.items():
            codes[attribute] = rng.choice(len(shares), size=n, p=np.array(shares) / sum(shares))
    # The target (or, stationary, a random group) has the top lift; the others a seeded order below it.
    top = target if target is not None else int(rng.integers(len(SHARES["A"])))
    others = [g for g in range(len(SHARES["A"])) if g != top]
    order = [*rng.permutation(others).tolist(), top]
    lift_a = np.empty(len(SHARES["A"]))
    lift_a[order] = lifts(len(SHARES["A"]), spread)
    lift = lift_a[codes["A"]] + lifts(2, spread_b)[codes["B"]]
    label = (rng.random(n) < BASE_RATE).astype(np.int64)
    tpr, fpr = TPR0 + lift, FPR0 + lift
    if kind == "breach":
        shifted = (np.arange(n) >= shift_at) & (codes["A"] == target)
        rise = 0.1 + delta - spread  # the target then sits 0.1 + delta above the lowest group
        tpr, fpr = np.minimum(tpr + rise * shifted, 0.99), fpr + rise * shifted
    prediction = (rng.random(n) < np.where(label == 1, tpr, fpr)).astype(np.int64)
    return codes, prediction, label, order[0]


def names_of():
    names = {a: [f"{a}{g}" for g in range(len(s))] for a, s in SHARES.items()}
    for x, y in PAIRS:
        names[f"{x}&{y}"] = [f"{gx}&{gy}" for gx in names[x] for gy in names[y]]
    return names


def with_intersections(codes):
    out = dict(codes)
    for x, y in PAIRS:
        out[f"{x}&{y}"] = codes[x] * len(SHARES[y]) + codes[y]
    return out


def fairwatch(codes, prediction, label, stop_after: int | None,
              block_spending: str | None = None) -> list[tuple[int, str]]:
    """Onsets (event index, attribute) of the pipeline's decisions; stops at the
    first one of A's own pairs at or after ``stop_after`` (so the list holds the
    first breach on A from either the pairs or the search; None: runs through)."""
    codes, names = with_intersections(codes), names_of()
    monitor = BreachMonitor("bench", thresholds=lambda attribute, metric: THRESHOLDS[metric],
                            attribute_budget=3, subgroup_attributes=[f"{x}&{y}" for x, y in PAIRS],
                            family_error=FAMILY_ERROR, check_events=CHECK_EVERY)
    if block_spending is not None:  # a baseline's (``benchmarks.power_age``)
        monitor.block_spending = block_spending
    positions = np.arange(prediction.size)
    for start in range(0, prediction.size, CHECK_EVERY):
        part = slice(start, start + CHECK_EVERY)
        onsets = monitor.observe({a: c[part] for a, c in codes.items()}, prediction[part], label[part], names,
                                 positions[part], positions[part].astype(float))
        if stop_after is not None and any(o.event_index >= stop_after and o.attribute == "A" for o in onsets):
            break
    return [(o.event_index, o.attribute) for o in monitor.onsets]


def _counts(c, p, y, k):
    pos, neg = y == 1, y == 0
    return (np.bincount(c, weights=p, minlength=k), np.bincount(c, minlength=k),
            np.bincount(c[pos], weights=p[pos], minlength=k), np.bincount(c[pos], minlength=k),
            np.bincount(c[neg], weights=p[neg], minlength=k), np.bincount(c[neg], minlength=k))


def naive(codes, prediction, label, stop_after: int | None) -> list[tuple[int, str]]:
    found = []
    for attribute in ("A", "B", "C") if stop_after is None else ("A",):  # delays are on A
        c, k = codes[attribute], len(SHARES[attribute])
        for end in range(CHECK_EVERY, prediction.size + 1, CHECK_EVERY):
            start = max(0, end - NAIVE_WINDOW)
            x_all, n_all, x_pos, n_pos, x_neg, n_neg = _counts(c[start:end], prediction[start:end],
                                                               label[start:end], k)
            hit = (_pair_breaches(x_all, n_all, THRESHOLDS["demographic_parity_difference"])
                   or _pair_breaches(x_pos, n_pos, THRESHOLDS["equalized_odds_difference"])
                   or _pair_breaches(x_neg, n_neg, THRESHOLDS["equalized_odds_difference"]))
            if not hit and (n_all >= 30).sum() >= 2:
                rate = np.where(n_all >= 30, x_all / np.maximum(n_all, 1), np.nan)
                hi, lo = int(np.nanargmax(rate)), int(np.nanargmin(rate))
                hit = x_all[hi] > 0 and katz_interval(x_all[lo], n_all[lo], x_all[hi], n_all[hi])[1] \
                    < THRESHOLDS["demographic_parity_ratio"]
            if hit:
                found.append((end - 1, attribute))
                if stop_after is not None and attribute == "A" and end - 1 >= stop_after:
                    break
    return found


def oracle_delays(codes, prediction, label, target: int, lowest: int, shift_at: int) -> tuple[float, float, float]:
    """Events after the change to the first look at which the post-change
    Newcombe interval of (target, lowest) lies beyond 0.1, at 95% and at the
    family's per-comparison level, and at which the anytime-valid oracle's
    lower bound does (``anytime_oracle_delay``; inf: never)."""
    looks, rates = _pair_counts_at_looks(codes["A"][shift_at:], prediction[shift_at:], label[shift_at:],
                                         target, lowest, shift_at)
    out = []
    for level in (0.05, ORACLE_FAMILY_LEVEL):
        z = float(norm.ppf(1 - level / 2))
        delay = np.inf
        for at, look in enumerate(looks):
            if any(n1[at] >= 30 and n2[at] >= 30 and newcombe_interval(x1[at], n1[at], x2[at], n2[at], z)[0] > 0.1
                   for x1, n1, x2, n2 in rates):
                delay = float(look)
                break
        out.append(delay)
    return out[0], out[1], _first_anytime_breach(looks, rates)


def anytime_oracle_delay(c, p, y, target: int, lowest: int, shift_at: int) -> float:
    """The anytime-valid oracle: it knows the change point and the breaching pair, and
    bounds the pair's post-change difference (selection rate, TPR, FPR: the first to
    breach) with the pair confidence sequence fairwatch uses (Jeffreys priors), at the
    same per-comparison level as oracle-fam. Unlike a fixed-sample interval looked at
    every 4,000 events, it is valid at every look: the delay any method valid at every
    moment pays even when told where the change is and which pair breaches.

    ``c``, ``p``, ``y``: A's codes, predictions and labels from the change on."""
    return _first_anytime_breach(*_pair_counts_at_looks(c, p, y, target, lowest, shift_at))


def _pair_counts_at_looks(c, p, y, target: int, lowest: int, shift_at: int):
    """The looks (indices after the change) and, per rate (selection rate, TPR, FPR), the
    positive predictions and trials of ``target`` and ``lowest`` up to each:
    [(x_target, n_target, x_lowest, n_lowest), ...], arrays over the looks."""
    looks = np.arange(CHECK_EVERY - shift_at % CHECK_EVERY, c.size + 1, CHECK_EVERY) - 1
    rates = []
    for counted in (np.ones(c.size, dtype=bool), y == 1, y == 0):
        counts = []
        for group in (target, lowest):
            in_group = counted & (c == group)
            counts += [np.cumsum(in_group & (p == 1))[looks].astype(float), np.cumsum(in_group)[looks].astype(float)]
        rates.append(tuple(counts))
    return looks, rates


def _first_anytime_breach(looks, rates) -> float:
    """The first look at which the pair confidence sequence at the family's level puts the
    pair's difference beyond 0.1 in any rate (inf: none)."""
    first = np.inf
    for x1, n1, x2, n2 in rates:
        lower = pair_difference_lower(x1, n1, x2, n2, np.full(looks.size, ORACLE_FAMILY_LEVEL))
        breached = np.flatnonzero((n1 >= 30) & (n2 >= 30) & (lower > 0.1))
        if breached.size:
            first = min(first, float(looks[breached[0]]))
    return first


def run_one(job):
    kind, seed, n, target_name, delta, shift_at = job
    target = TARGETS.get(target_name)
    codes, prediction, label, lowest = make_stream(seed, n, kind, target, delta, shift_at)
    if kind != "breach":
        return job, fairwatch(codes, prediction, label, None), naive(codes, prediction, label, None), None
    return (job, fairwatch(codes, prediction, label, shift_at), naive(codes, prediction, label, shift_at),
            oracle_delays(codes, prediction, label, target, lowest, shift_at))


def first_is_search(found, shift_at) -> bool:
    """Whether the first breach declared on A after the change came from the subgroup search
    (strictly before any of A's pairs)."""
    return first_delay(found, shift_at) < first_delay(found, shift_at, pairs_only=True)


def first_delay(found, shift_at, pairs_only: bool = False) -> float:
    """Events from the change to the first breach declared on A (a pair, or a searched cell
    holding one of A's groups; ``pairs_only``: one of A's pairs)."""
    after = [i - shift_at for i, a in found
             if i >= shift_at and (a == "A" if pairs_only else "A" in a.split("&"))]
    return min(after) if after else np.inf


def rate_median_p95(values) -> tuple[str, str, str]:
    """Detection rate, median and 95th-percentile delay of ``values`` (inf: a miss), as printed."""
    values = np.asarray(values, dtype=float)
    rate = np.isfinite(values).mean()
    if not np.isfinite(values).any():
        return f"{rate:.2f}", "-", "-"
    # Order statistics over all streams, a miss counting as infinitely late.
    median, p95 = np.percentile(values, 50, method="higher"), np.percentile(values, 95, method="higher")
    show = lambda v: f"{v / 1000:,.0f}k" if np.isfinite(v) else ">horizon"  # noqa: E731
    return f"{rate:.2f}", show(median), show(p95)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke-test size (about a minute)")
    parser.add_argument("--repeats", type=int, default=20, help="streams per (group, delta)")
    parser.add_argument("--stationary", type=int, default=210)
    parser.add_argument("--shift-at", type=int, default=200_000)
    parser.add_argument("--horizon", type=int, default=1_000_000, help="events after the change")
    parser.add_argument("--stationary-events", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--kinds", default="stationary,near,drift", help="stationary kinds to run (all three)")
    parser.add_argument("--no-breaches", action="store_true", help="stationary streams only")
    parser.add_argument("--groups", default=",".join(TARGETS), help="shifted groups of A to run (15%%,3%%)")
    parser.add_argument("--deltas", default=",".join(map(str, DELTAS)), help="breach sizes beyond the threshold")
    parser.add_argument("--first-seed", type=int, default=10_000,
                        help="seed of each row's first breach stream (others follow): other seeds, same streams")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.stationary, args.shift_at = 2, 6, 40_000
        args.horizon, args.stationary_events = 200_000, 200_000
    kinds = args.kinds.split(",")
    jobs = [(kind, 100 + i, args.stationary_events, None, 0.0, None)
            for i in range(args.stationary) for kind in [("stationary", "near", "drift")[i % 3]] if kind in kinds]
    targets = [] if args.no_breaches else [t for t in args.groups.split(",") if t]
    deltas = [float(d) for d in args.deltas.split(",") if d]
    for target_name in targets:
        for delta in deltas:
            jobs += [("breach", args.first_seed + r, args.shift_at + args.horizon, target_name, delta, args.shift_at)
                     for r in range(args.repeats)]
    started = time.perf_counter()
    # Longest first, so that the pool's last jobs are short.
    order = sorted(range(len(jobs)), key=lambda i: (jobs[i][0] != "breach", -jobs[i][4]))
    with ProcessPoolExecutor(args.workers) as pool:
        done = dict(zip(order, pool.map(run_one, [jobs[i] for i in order], chunksize=1)))
    results = [done[i] for i in range(len(jobs))]
    elapsed = time.perf_counter() - started
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{elapsed:.0f} s with {args.workers} processes")
    stationary = sum(job[0] != "breach" for job in jobs)
    breach_rows = "" if args.no_breaches else (
        f"; {args.repeats} breach streams per row (seeds from {args.first_seed}), change at {args.shift_at:,}, "
        f"horizon {args.horizon:,} events after it")
    print(f"{stationary} stationary streams ({args.kinds}) of {args.stationary_events:,} events{breach_rows}; "
          f"looks every {CHECK_EVERY:,} events")
    print()
    if stationary:
        print_false_pages(results, args.kinds)
    if not targets:
        return
    print("breaches: detection rate within the horizon; median and 95th-percentile delay (events after the "
          "change; a miss counts as later than any)")
    print_breaches(results, targets, deltas)


def print_false_pages(results, kinds: str) -> None:
    print("false pages: share of stationary streams with any breach declared")
    print(f"{'streams':<34}{'naive (baseline)':>18}{'fairwatch':>12}")
    for kind in ("stationary", "near", "drift", None):
        chosen = [r for r in results if r[0][0] != "breach" and (kind is None or r[0][0] == kind)]
        if not chosen:
            continue
        label = {"stationary": "gaps 0.03 inside", "near": "near-threshold, A 0.01 inside",
                 "drift": "group-mix drift", None: "all"}[kind]
        print(f"{label + f' ({len(chosen)})':<34}{np.mean([bool(r[2]) for r in chosen]):>18.3f}"
              f"{np.mean([bool(r[1]) for r in chosen]):>12.3f}")
    print()


def print_breaches(results, targets: list[str], deltas: list[float]) -> None:
    header = (f"{'group':<6}{'delta':>6} | {'naive rate':>10}{'med':>9}{'p95':>9} | {'fairwatch':>9}{'med':>9}"
              f"{'p95':>9}{'search':>7} | {'pairs':>6}{'med':>9} | {'oracle95%':>9}{'med':>9} | "
              f"{'oracle-fam':>10}{'med':>9} | {'oracle-av':>9}{'med':>9} | {'fw/oracle-fam':>13}{'fw/oracle-av':>13}")
    print(header)
    for target_name in targets:
        for delta in deltas:
            rows = [r for r in results if r[0][0] == "breach" and r[0][3] == target_name and r[0][4] == delta]
            shift_at = rows[0][0][5]
            fw = [first_delay(r[1], shift_at) for r in rows]
            pairs = rate_median_p95([first_delay(r[1], shift_at, pairs_only=True) for r in rows])
            nv = [first_delay(r[2], shift_at) for r in rows]
            o95 = [r[3][0] for r in rows]
            ofam = [r[3][1] for r in rows]
            oav = [r[3][2] for r in rows]
            f, v, a, b, av = map(rate_median_p95, (fw, nv, o95, ofam, oav))
            by_search = sum(first_is_search(r[1], shift_at) for r in rows)
            fw_med = np.percentile(fw, 50, method="higher")
            of_med = np.percentile(ofam, 50, method="higher")
            ratio, ratio_av = (f"{fw_med / m:.1f}x" if np.isfinite(fw_med) and np.isfinite(m) else "-"
                               for m in (of_med, np.percentile(oav, 50, method="higher")))
            early = sum(any(i < shift_at for i, _ in r[1]) for r in rows)
            note = f"  ({early} fairwatch pages before the change)" if early else ""
            print(f"{target_name:<6}{delta:>6.2f} | {v[0]:>10}{v[1]:>9}{v[2]:>9} | {f[0]:>9}{f[1]:>9}{f[2]:>9}"
                  f"{by_search:>7} | {pairs[0]:>6}{pairs[1]:>9} | {a[0]:>9}{a[1]:>9} | {b[0]:>10}{b[1]:>9} | "
                  f"{av[0]:>9}{av[1]:>9} | {ratio:>13}{ratio_av:>13}{note}")
    print()
    print(f"oracle-fam: the oracle at the family's per-comparison level {ORACLE_FAMILY_LEVEL:.2g}, two-sided; "
          "oracle-av: the anytime-valid oracle at the same level.")
    print("search: streams whose first breach on A was declared by the subgroup search (a cell holding the "
          "changed group against its rest); pairs: fairwatch's decisions on A's own pairs alone (rate, median).")


if __name__ == "__main__":
    main()
