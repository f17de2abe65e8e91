"""The one mixed-precision search: which parts of an int8 model to keep in float so that the task's gate holds.

Every int8 route that can keep parts of a model in float (ai-edge-quantizer's per-op configs, PT2E activation
quantizers, the Mask R-CNN graph's ops) hands this search a :class:`Space`, and the
task hands it a :class:`Judge`; the search knows neither. A step is one ``evaluate`` of a candidate mix on the
validation split (the test split then measures the result, never the search).

1. Full int8 first; if it passes, nothing is kept in float.
2. *Sensitivity by the task's own metric*: each candidate alone in float (the rest int8) is evaluated (``quick``:
   the route may use a subset of the validation images for this pass), and candidates rank by the task's score
   (mask mIoU for masks, gates failed / missed detections / matched IoU for instances). A route whose per-candidate
   file costs a conversion may give its own ranking instead (``Space.prior``).
3. *Walks*: each order of ``Policy.orders`` — ``ranked`` (candidates that helped alone, best first) and
   ``from-input`` (graph order: where int8 error enters in the first layers and every later layer carries it) —
   is walked cumulatively, one candidate more per step, until a mix passes or ``Policy.max_steps`` candidates are
   float; a candidate that would put more than ``Policy.max_float_macs`` % of the multiply-adds in float is
   skipped.
4. The passing mix with the fewest float multiply-adds wins (a single candidate that passed alone on the whole
   split counts); if none passes, the closest miss by the task's score, so that its figures are on record and the
   gate says it failed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

DEFAULT_MAX_FLOAT_MACS = 10.0  # % of multiply-adds allowed in float (the mobile teams' rule of thumb: ~int8 speed)


@dataclass(frozen=True)
class Space:
    """What a route lets the search keep in float.

    Attributes:
        candidates: what can be kept in float, in graph order from the input (op indices, tensor names).
        evaluate: ``(float candidates, quick) -> the task's parity result`` (anything with ``passed``); ``quick``
            asks for the sensitivity pass's cheaper check.
        float_macs: the share (0 to 1) of the model's multiply-adds a mix computes in float; None: not counted.
        describe: what the record says about one candidate (its op type, scope, MACs).
        prior: the route's own sensitivity ranking, best first: no per-candidate pass is run.
        quick_is_full: the quick check is the whole split (a candidate that passes alone is a result).
    """

    candidates: Sequence[Hashable]
    evaluate: Callable[[list, bool], Any]
    float_macs: Callable[[Sequence[Hashable]], float] | None = None
    describe: Callable[[Hashable], dict[str, Any]] = lambda c: {}
    prior: Sequence[Hashable] | None = None
    quick_is_full: bool = False


@dataclass(frozen=True)
class Judge:
    """What the task says about a parity result: ``score`` (higher is closer to passing; compared between results
    of the same images), ``figures`` (what the record keeps), ``show`` (one log line)."""

    score: Callable[[Any], tuple]
    figures: Callable[[Any], dict[str, Any]]
    show: Callable[[Any], str]


@dataclass(frozen=True)
class Policy:
    max_float_macs: float = DEFAULT_MAX_FLOAT_MACS  # % of multiply-adds
    max_steps: int = 12  # candidates in float at most
    orders: tuple[str, ...] = ("ranked", "from-input")

    def __post_init__(self) -> None:
        unknown = set(self.orders) - {"ranked", "from-input"}
        if unknown or not self.orders:
            raise ValueError(f"search orders are 'ranked' and 'from-input', not {sorted(unknown) or 'none'}")


@dataclass
class Found:
    """The search's answer: ``keep`` (the candidates kept in float), ``result`` (their validation parity)."""

    needed: bool
    passed: bool
    keep: list
    float_macs_pct: float | None
    result: Any
    ranking: list[dict[str, Any]] = field(default_factory=list)
    tried: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self, judge: Judge) -> dict[str, Any]:
        return {"needed": self.needed, "passed": self.passed, "float_macs_pct": self.float_macs_pct,
                "validation": judge.figures(self.result), "ranking": self.ranking, "search": self.tried,
                "trials": len(self.tried), "search_seconds": self.seconds}


def search(space: Space, judge: Judge, policy: Policy = Policy(), log: Callable[[str], None] = print,
           progress: Callable[[int, int], None] | None = None) -> Found:
    """The cheapest mix of ``space``'s candidates kept in float that passes the task's gate (module docstring)."""
    t0 = time.time()
    budget = policy.max_float_macs / 100.0

    def share(keep: Sequence[Hashable]) -> float | None:
        return None if space.float_macs is None else space.float_macs(keep)

    def fits(keep: Sequence[Hashable]) -> bool:
        s = share(keep)
        return s is None or s <= budget

    def pct(keep: Sequence[Hashable]) -> float | None:
        s = share(keep)
        return None if s is None else round(100 * s, 3)

    tried: list[dict[str, Any]] = []
    results: list[tuple[list, Any]] = []

    def trial(keep: list, stage: str, quick: bool = False) -> Any:
        r = space.evaluate(list(keep), quick)
        if not quick or space.quick_is_full:
            tried.append({"order": stage, "float": len(keep), "float_macs_pct": pct(keep), **judge.figures(r)})
            results.append((list(keep), r))
        return r

    full = trial([], "full-int8")
    log(f"  full int8: {judge.show(full)}")
    if full.passed:
        return Found(False, True, [], pct([]), full, [], tried, round(time.time() - t0, 1))

    ranking: list[dict[str, Any]] = []
    if space.prior is not None:
        ranked = list(space.prior)
    else:
        log(f"  sensitivity: each of {sum(fits([c]) for c in space.candidates)} candidates within the budget alone "
            f"in float ...")
        base = full if space.quick_is_full else space.evaluate([], True)
        scored = []
        for n, c in enumerate(space.candidates):
            if fits([c]):
                scored.append((c, trial([c], "sensitivity", quick=True)))
            if progress:
                progress(n + 1, len(space.candidates))
        scored.sort(key=lambda cr: (judge.score(cr[1]), -(share([cr[0]]) or 0.0)), reverse=True)
        ranking = [{"candidate": c, "float_macs_pct": pct([c]), **space.describe(c), **judge.figures(r),
                    "helped": judge.score(r) > judge.score(base)} for c, r in scored]
        ranked = [c for c, r in scored if judge.score(r) > judge.score(base)]
        if scored:
            log(f"  most sensitive: {scored[0][0]} alone in float: {judge.show(scored[0][1])}")

    if not any(r.passed for _, r in results):
        orders = {"ranked": ranked, "from-input": list(space.candidates)}
        for name in policy.orders:
            keep: list = []
            for c in orders[name]:
                if len(keep) >= policy.max_steps:
                    break
                if not fits(keep + [c]):
                    continue  # a cheaper candidate further on may still fit
                keep.append(c)
                if len(keep) == 1 and space.quick_is_full and space.prior is None and name == "ranked":
                    continue  # measured in the sensitivity pass
                r = trial(keep, name)
                log(f"  {name} {len(keep):2d} float, {pct(keep) if pct(keep) is not None else '—'} % MACs: "
                    f"{judge.show(r)}")
                if r.passed:
                    break
            if any(r.passed for _, r in results):
                break

    passing = [(k, r) for k, r in results if r.passed]
    if passing:
        keep, res = min(passing, key=lambda kr: (share(kr[0]) or 0.0, len(kr[0])))
    else:
        keep, res = max(results, key=lambda kr: (judge.score(kr[1]), -(share(kr[0]) or 0.0)))
    return Found(True, bool(passing), keep, pct(keep), res, ranking, tried, round(time.time() - t0, 1))
