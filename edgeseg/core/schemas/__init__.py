"""JSON Schemas of the files edgeseg writes for other programs (an app's CI, a mobile build).

``report-1.schema.json`` describes ``report.json`` (``edgeseg.report/1``), ``bundle-1.schema.json`` a bundle's
``manifest.json`` (``edgeseg.bundle/1``). Both are JSON Schema draft 2020-12; validate with any validator.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


@functools.cache
def _validator(name: str):
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads((HERE / f"{name}.schema.json").read_text()))


def problems(doc: Any, name: str) -> list[str]:
    """Every way ``doc`` breaks schema ``name`` (``report-1``, ``bundle-1``), as "json/path: message" lines."""
    errors = sorted(_validator(name).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]
