"""``--target a,b[:precision] --precision x,y|all``: the (target, precision) pairs a command works on."""

from __future__ import annotations

from edgeseg.core.errors import UsageError
from edgeseg.core.registry import check_choice


def export_pairs(targets: str, precisions: str | None, table: dict[str, tuple[tuple[str, ...], str]] | None = None
                 ) -> tuple[list[tuple[str, str]], list[str]]:
    """The (target, precision) pairs of ``--target a,b --precision x,y`` (``all`` = every target / every
    precision of each target; no precision = each target's default), then the ``TARGET:PRECISION`` items of
    ``--target`` (that pair alone, e.g. ``tflite,coreml:fp16 --precision all``), and a note for each listed
    precision a listed target does not have (skipped). A precision no listed target has is an error.
    ``table``: target -> (precisions, default precision); default: the semantic exporters' table."""
    if table is None:
        from exporters import TARGETS

        table = {n: (t.precisions, t.default_precision) for n, t in TARGETS.items()}
    items = list(table) if targets.strip() == "all" else [t.strip() for t in targets.split(",") if t.strip()]
    if not items:
        raise UsageError("--target is empty; give one or more of " + ", ".join(table))
    fixed: list[tuple[str, str]] = []  # TARGET:PRECISION items: that pair only, whatever --precision says
    names = []
    for item in items:
        n, _, p = item.partition(":")
        check_choice(n, list(table), "target")
        if p:
            check_choice(p, list(table[n][0]), f"precision for target '{n}'")
            fixed.append((n, p))
        else:
            names.append(n)
    if not names:
        return list(dict.fromkeys(fixed)), []
    wanted = None if precisions is None or precisions.strip() == "all" else \
        [p.strip() for p in precisions.split(",") if p.strip()]
    pairs: list[tuple[str, str]] = []
    skipped: list[str] = []
    for n in dict.fromkeys(names):
        have, default = table[n]
        if precisions is None:
            pairs.append((n, default))
        elif wanted is None:
            pairs += [(n, p) for p in have]
        else:
            pairs += [(n, p) for p in dict.fromkeys(wanted) if p in have]
            skipped += [f"{n} has no {p} (it has {', '.join(have)}): skipped" for p in dict.fromkeys(wanted)
                        if p not in have]
    for p in wanted or ():
        if not any(p == q for _, q in pairs):
            every = sorted({q for n in names for q in table[n][0]})
            check_choice(p, every, f"precision for target{'s' if len(names) > 1 else ''} '{','.join(names)}'")
    return list(dict.fromkeys(pairs + fixed)), skipped
