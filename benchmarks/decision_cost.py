"""Decision-layer cost per event, two versions of ``monitor/breach.py`` interleaved batch by batch in one process.

    git show 38db6c9:monitor/breach.py > /tmp/old/old_breach.py   # any earlier version
    PYTHONPATH=$PWD:/tmp/old python -m benchmarks.decision_cost 1000000

Each batch goes through the old and then the new ``BreachMonitor``, so both
see the same load: on a shared, busy machine this is the comparison that
survives the noise that swamps two separate ``benchmarks.core`` runs.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import old_breach  # the version to compare with, from PYTHONPATH
from fairwatch.monitor import breach as new_breach
from fairwatch.monitor.synthetic import SyntheticStream

def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    stream = SyntheticStream(n_events=n, seed=11)
    values, score, prediction, label, has_outcome = stream.arrays()
    label = np.where(has_outcome, label, -1)
    codes, names = {}, {}
    for a, v in values.items():
        u, c = np.unique(v, return_inverse=True)
        codes[a], names[a] = c.astype(np.int64), list(u)
    for x, y in (("sex", "race"), ("sex", "age"), ("race", "age")):
        k = len(names[y])
        codes[f"{x}&{y}"] = codes[x] * k + codes[y]
        names[f"{x}&{y}"] = [f"{gx}&{gy}" for gx in names[x] for gy in names[y]]
    kw = dict(thresholds=lambda attribute, metric: 0.8 if metric.endswith("ratio") else 0.1, attribute_budget=3, subgroup_attributes=["sex&race", "sex&age", "race&age"],
              family_error=0.05, block_events=8000, staggers=2, check_events=4000)
    old = old_breach.BreachMonitor("m", **kw)
    new = new_breach.BreachMonitor("m", **kw)
    t_old = t_new = 0.0
    pos = np.arange(n)
    for s in range(0, n, 4096):
        part = slice(s, s + 4096)
        c = {a: v[part] for a, v in codes.items()}
        t0 = time.perf_counter(); old.observe(c, prediction[part], label[part], names, pos[part], pos[part].astype(float))
        t1 = time.perf_counter(); new.observe(c, prediction[part], label[part], names, pos[part], pos[part].astype(float))
        t2 = time.perf_counter()
        t_old += t1 - t0; t_new += t2 - t1
    print(f"{n:,} events, 3 attributes + 3 searched pairs, batches of 4096, checks every 4000:")
    print(f"decisions before: {t_old / n * 1e6:.2f} us/event; after: {t_new / n * 1e6:.2f} us/event; "
          f"sequences {len(old.accumulators)} vs {len(new.accumulators)}; onsets {len(old.onsets)} vs {len(new.onsets)}")


if __name__ == "__main__":
    main()
