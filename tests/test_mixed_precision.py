"""The one mixed-precision search on hand-made spaces whose answer is known: what it ranks, walks, skips and keeps."""

from dataclasses import dataclass

import pytest

from edgeseg.core.mixed_precision import Judge, Policy, Space, search


@dataclass
class Result:
    passed: bool
    quality: float


JUDGE = Judge(score=lambda r: (r.passed, r.quality), figures=lambda r: {"quality": r.quality, "passed": r.passed},
              show=lambda r: f"{r.quality:.2f}")
MACS = {"a": 0.01, "b": 0.02, "c": 0.30, "d": 0.02, "e": 0.01}  # share of multiply-adds of each candidate


def space(quality, need=0.9, prior=None, quick_is_full=True, calls=None):
    """Candidates a..e in graph order; ``quality[c]`` is what keeping ``c`` in float adds; a mix passes at ``need``."""

    def evaluate(keep, quick):
        if calls is not None:
            calls.append((tuple(keep), quick))
        q = 0.5 + sum(quality[c] for c in keep)
        return Result(q >= need, q)

    return Space(candidates=list(MACS), evaluate=evaluate, float_macs=lambda keep: sum(MACS[c] for c in keep),
                 prior=prior, quick_is_full=quick_is_full, describe=lambda c: {"name": c})


def test_full_int8_that_passes_keeps_nothing_float():
    found = search(space({c: 0.0 for c in MACS}, need=0.5), JUDGE, log=lambda s: None)
    assert not found.needed and found.passed and found.keep == [] and len(found.tried) == 1


def test_ranked_walk_keeps_the_cheapest_passing_mix_and_skips_what_exceeds_the_budget():
    # c helps most but costs 30 % of the MACs: never measured (over the 10 % budget); b and d together pass
    quality = {"a": 0.0, "b": 0.25, "c": 0.5, "d": 0.2, "e": -0.1}
    calls = []
    found = search(space(quality, calls=calls), JUDGE, Policy(max_float_macs=10.0), log=lambda s: None)
    assert found.passed and sorted(found.keep) == ["b", "d"] and found.float_macs_pct == pytest.approx(4.0)
    assert ("c",) not in [k for k, _ in calls]
    # ranking by the task's score, best first; only what helped alone is walked
    assert [r["candidate"] for r in found.ranking] == ["b", "d", "a", "e"]
    assert [r["helped"] for r in found.ranking] == [True, True, False, False]
    # full, each fitting candidate alone, then the pair (b alone was measured in the sensitivity pass)
    assert [t["order"] for t in found.tried] == ["full-int8"] + ["sensitivity"] * 4 + ["ranked"]
    assert found.to_json(JUDGE)["validation"] == {"quality": pytest.approx(0.95), "passed": True}


def test_a_single_candidate_that_passes_alone_wins_over_a_longer_walk():
    found = search(space({"a": 0.0, "b": 0.5, "c": 0.0, "d": 0.1, "e": 0.0}), JUDGE, log=lambda s: None)
    assert found.keep == ["b"] and found.passed


def test_from_input_order_when_no_single_candidate_helps():
    # only the first two layers together help (error entering early): nothing helps alone, the graph order finds it
    def evaluate(keep, quick):
        q = 0.95 if {"a", "b"} <= set(keep) else 0.5
        return Result(q >= 0.9, q)

    sp = Space(candidates=list(MACS), evaluate=evaluate, float_macs=lambda k: sum(MACS[c] for c in k),
               quick_is_full=True)
    found = search(sp, JUDGE, log=lambda s: None)
    assert found.passed and found.keep == ["a", "b"] and found.tried[-1]["order"] == "from-input"
    ranked_only = search(sp, JUDGE, Policy(orders=("ranked",)), log=lambda s: None)
    assert not ranked_only.passed and ranked_only.keep == []  # the closest miss: full int8 itself


def test_quick_checks_rank_but_never_count_as_results():
    calls = []
    quality = {"a": 0.5, "b": 0.0, "c": 0.0, "d": 0.0, "e": 0.0}
    found = search(space(quality, quick_is_full=False, calls=calls), JUDGE, log=lambda s: None)
    # a passes alone on the quick subset, but only the whole split's check of it counts
    assert found.keep == ["a"] and [t["order"] for t in found.tried] == ["full-int8", "ranked"]
    assert calls[1] == ((), True)  # the quick baseline the ranking compares with


def test_a_routes_own_ranking_skips_the_sensitivity_pass_and_max_steps_bounds_the_walk():
    calls = []
    quality = {c: 0.05 for c in MACS}
    found = search(space(quality, prior=["e", "d", "b", "a"], calls=calls), JUDGE,
                   Policy(max_steps=3, orders=("ranked",)), log=lambda s: None)
    assert [k for k, _ in calls] == [(), ("e",), ("e", "d"), ("e", "d", "b")]
    assert not found.passed and found.keep == ["e", "d", "b"]  # the closest miss: the most quality


def test_policy_refuses_unknown_orders():
    with pytest.raises(ValueError, match="'ranked' and 'from-input'"):
        Policy(orders=("random",))
