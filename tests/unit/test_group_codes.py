"""Group codes through the per-combination cache equal the value-by-value definition, folding included."""

from __future__ import annotations

import pickle
import random

import numpy as np

from fairwatch.monitor.group_metrics import UNKNOWN_GROUP, GroupIndex, GroupMetrics


def reference_codes(batches, attributes, max_group_values):
    """The definition: each value looked up in its attribute's index, ``unknown`` where absent."""
    indexes = {a: GroupIndex(max_group_values) for a in attributes}
    out = []
    for groups in batches:
        out.append({a: [indexes[a][g.get(a, UNKNOWN_GROUP)] for g in groups] for a in attributes})
    return out, {a: indexes[a].folded for a in attributes}


def test_cached_codes_equal_the_definition_with_folding_and_missing_attributes():
    rng = random.Random(7)
    attributes = ["sex", "race", "age"]
    batches = []
    for b in range(12):
        groups = []
        for _ in range(500):
            g = {"sex": rng.choice("FMX"), "race": f"r{rng.randrange(30)}", "age": rng.choice(["<25", "25-45", "45+"])}
            if b % 4 == 3 and rng.random() < 0.05:  # some batches have events without an attribute
                del g[rng.choice(attributes)]
            groups.append(g)
        batches.append(groups)
    metrics = GroupMetrics("m", attributes=attributes, max_group_values=10)  # race folds past 9 values
    expected, folded = reference_codes(batches, attributes, 10)
    for groups, want in zip(batches, expected):
        got = metrics.group_codes(groups)
        for a in attributes:
            assert got[a].dtype == np.int64 and got[a].tolist() == want[a], a
    assert {a: metrics.index[a].folded for a in attributes} == folded
    assert folded["race"] > 0  # the test exercised folding


def test_the_cache_is_not_state_and_a_restored_metrics_gives_the_same_codes():
    metrics = GroupMetrics("m", attributes=["sex"])
    metrics.group_codes([{"sex": "F"}, {"sex": "M"}])
    restored = pickle.loads(pickle.dumps(metrics))
    assert "_combinations" not in restored.__dict__
    assert restored.group_codes([{"sex": "M"}, {"sex": "F"}, {}])["sex"].tolist() == [1, 0, 2]


def test_a_batch_with_a_missing_attribute_after_folded_values_counts_each_fold_once():
    metrics = GroupMetrics("m", attributes=["race"], max_group_values=3)  # two values, then "other"
    groups = [{"race": "a"}, {"race": "b"}, {"race": "c"}, {"race": "d"}, {}, {"race": "c"}]
    expected, folded = reference_codes([groups], ["race"], 3)
    assert metrics.group_codes(groups)["race"].tolist() == expected[0]["race"] == [0, 1, 2, 2, 2, 2]
    # c, d, unknown, c: each occurrence once, not again by the value-by-value fallback
    assert metrics.index["race"].folded == folded["race"] == 4


def test_the_cache_empties_past_its_capacity_and_still_gives_the_same_codes():
    metrics = GroupMetrics("m", attributes=["a", "b"])
    metrics.group_codes([{"a": "x", "b": "y"}])
    metrics._combinations.capacity = 4
    batches = [[{"a": f"x{i}", "b": f"y{j}"} for j in range(3)] for i in range(6)]
    expected, _ = reference_codes(batches, ["a", "b"], 1_000)
    fresh = GroupMetrics("m", attributes=["a", "b"])
    fresh.group_codes([{"a": "x", "b": "y"}])
    fresh._combinations.capacity = 4
    for groups, want in zip(batches, reference_codes([[{"a": "x", "b": "y"}], *batches], ["a", "b"], 1_000)[0][1:]):
        got = fresh.group_codes(groups)
        assert {k: got[k].tolist() for k in ("a", "b")} == want
        assert len(fresh._combinations.rows) <= 4 + len(groups)


def test_intersection_codes_from_the_combination_rows_name_each_event_s_own_cell():
    rng = random.Random(11)
    metrics = GroupMetrics("m", attributes=["sex", "race", "age"], intersections=[("sex", "race")],
                           search_intersections=[("race", "age"), ("sex", "age")])
    for b in range(10):
        if b == 6:
            metrics._combinations.capacity = 3  # the row table empties between batches from here on
        groups = [{"sex": rng.choice("FM"), "race": f"r{rng.randrange(5)}", "age": rng.choice(["<25", "45+"])}
                  for _ in range(400)]
        if b % 3 == 2:
            del groups[rng.randrange(len(groups))]["race"]  # value by value: the row table is not used
        codes = metrics.group_codes(groups)
        for name in ("sex&race", "race&age", "sex&age"):
            left, right = name.split("&")
            cells = [metrics.index[name].values[c] for c in codes[name].tolist()]
            assert cells == [f"{g.get(left, UNKNOWN_GROUP)}&{g.get(right, UNKNOWN_GROUP)}" for g in groups], (b, name)


def test_a_three_attribute_intersection_names_each_cell_and_four_are_refused_in_one_line():
    """Codes are packed 20 bits per attribute into one int64: three attributes fit, four would overflow."""
    import msgspec
    import pytest

    from fairwatch.monitor.config import MAX_INTERSECTION_ATTRIBUTES, MonitorConfig

    rng = random.Random(5)
    metrics = GroupMetrics("m", attributes=["a", "b", "c"], intersections=[("a", "b", "c")])
    groups = [{"a": f"a{rng.randrange(3)}", "b": f"b{rng.randrange(4)}", "c": f"c{rng.randrange(5)}"}
              for _ in range(300)]
    cells = [metrics.index["a&b&c"].values[c] for c in metrics.group_codes(groups)["a&b&c"].tolist()]
    assert cells == [f"{g['a']}&{g['b']}&{g['c']}" for g in groups]

    assert MAX_INTERSECTION_ATTRIBUTES == 3
    with pytest.raises(ValueError, match=r"^intersection a&b&c&d joins 4 attributes; at most 3 are tracked jointly$"):
        MonitorConfig(attributes=["a", "b", "c", "d"], intersections=[["a", "b", "c", "d"]])
    with pytest.raises(msgspec.ValidationError, match=r"<= 1000000 - at `\$.max_group_values`"):
        msgspec.convert({"max_group_values": 1_048_576}, MonitorConfig)
