"""What a wheel ships: every package of crl_napari is listed in pyproject.toml, or `pip install .` (not editable)
would install a plugin that fails on its first import of crl_napari.runs or crl_napari.strategies."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_for_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "crl_napari").rglob("__init__.py")
             if "__pycache__" not in p.parts}
    assert found, "no package found under crl_napari/"
    assert found <= listed, f"packages a wheel would miss: {sorted(found - listed)}"
