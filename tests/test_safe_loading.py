"""Every file the project loads with torch is loaded as data: each ``torch.load`` call passes
``weights_only=True`` literally (a pickle loaded any other way can run code), and no ``np.load`` allows pickles."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fedmtl", "benchmark", "generation", "labeling", "benchmarks", "flower_app", "tests")


def _calls(name: str) -> list[tuple[Path, ast.Call]]:
    module, attr = name.split(".")
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                func = node.func if isinstance(node, ast.Call) else None
                if isinstance(func, ast.Attribute) and func.attr == attr and \
                        isinstance(func.value, ast.Name) and func.value.id == module:
                    found.append((path, node))
    return found


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<not a literal>"
    return "<absent>"


def test_every_torch_load_is_weights_only():
    calls = _calls("torch.load")
    assert len(calls) >= 5  # the scan sees the project's loaders (checkpoints, personal state, networks, results)
    bad = [f"{p.relative_to(ROOT)}:{c.lineno}" for p, c in calls if _keyword(c, "weights_only") is not True]
    assert bad == [], f"torch.load without weights_only=True: {bad}"


def test_no_np_load_allows_pickles():
    bad = [f"{p.relative_to(ROOT)}:{c.lineno}" for p, c in _calls("np.load") if _keyword(c, "allow_pickle") is True]
    assert bad == [], bad
