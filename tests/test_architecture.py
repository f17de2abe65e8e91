"""The import contract that keeps the layout honest (docs/architecture.md).

Every import of edgeseg/ and exporters/ counts, at module level or inside a function (ast, not runtime):
- no import circles between modules (a package's ``__init__`` importing its own submodules is left out, as in
  ``shared/tools/import-circles``);
- layers point down: ``cli`` > ``steps`` / ``quantize`` > ``tasks`` > ``train`` / ``models`` / ``data`` /
  ``losses`` > ``core``; a module imports its own layer or lower ones, never a higher one;
- ``exporters`` (the Target seam) imports nothing of edgeseg;
- no module imports another module's private names (``from m import _x`` or ``m._x``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edgeseg", "exporters")
LAYERS = [("edgeseg.cli", "edgeseg.__main__"),
          ("edgeseg.steps", "edgeseg.quantize"),
          ("edgeseg.tasks",),
          ("edgeseg.train", "edgeseg.models", "edgeseg.data", "edgeseg.losses"),
          ("edgeseg.core", "edgeseg")]


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            is_init = parts[-1] == "__init__"
            mods[".".join(parts[:-1] if is_init else parts)] = (p, is_init)
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(mod: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every import in ``mod``; attribute reads ``alias._x`` of
    an imported module come back with the attribute as the name."""
    path, is_init = MODULES[mod]
    pkg = mod if is_init else mod.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    out, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                r = _resolve(a.name)
                if r:
                    out.append((r, "", node.lineno))
                    aliases[a.asname or a.name.split(".")[0]] = (a.name if a.asname else a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                if full in MODULES:  # a submodule (its package's __init__ runs too)
                    out.append((full, "", node.lineno))
                    aliases[a.asname or a.name] = full
                    if _resolve(base):
                        out.append((_resolve(base), "", node.lineno))
                elif _resolve(base):
                    out.append((_resolve(base), a.name, node.lineno))
    for node in ast.walk(tree):  # alias._private
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            target = _resolve(aliases[node.value.id])
            if target and node.attr.startswith("_") and not node.attr.startswith("__"):
                out.append((target, node.attr, node.lineno))
    return out


def _edges() -> dict[str, set[str]]:
    edges = {}
    for m, (_, is_init) in MODULES.items():
        edges[m] = {t for t, _, _ in _imports(m) if t != m and not (is_init and t.startswith(m + "."))}
    return edges


def _layer(mod: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(mod == p or mod.startswith(p + ".") for p in prefixes if p != "edgeseg") or mod == "edgeseg":
            return i
    raise AssertionError(f"{mod} belongs to no layer: add its folder to LAYERS in {__file__}")


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter[0]; counter[0] += 1; stack.append(start); on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1; stack.append(w); on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop(); on.discard(w); comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        comps.append(sorted(comp))
    return comps


def test_circle_finder_finds_a_planted_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    found = circles(_edges())
    assert found == [], "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_layers_point_down():
    wrong = []
    for m in MODULES:
        if m.startswith("exporters"):
            continue
        for t, _, line in _imports(m):
            if t.startswith("edgeseg") and _layer(t) < _layer(m):
                wrong.append(f"{MODULES[m][0].relative_to(ROOT)}:{line} imports {t} (a higher layer)")
    assert wrong == [], "\n".join(wrong)


def test_exporters_import_nothing_of_edgeseg():
    wrong = [f"{MODULES[m][0].relative_to(ROOT)}:{line} imports {t}"
             for m in MODULES if m.startswith("exporters") for t, _, line in _imports(m) if t.startswith("edgeseg")]
    assert wrong == [], "\n".join(wrong)


def test_no_module_imports_another_modules_private_names():
    wrong = [f"{MODULES[m][0].relative_to(ROOT)}:{line} uses {t}.{name}"
             for m in MODULES for t, name, line in _imports(m)
             if t != m and name.startswith("_") and not name.startswith("__")]
    assert wrong == [], "\n".join(wrong)
