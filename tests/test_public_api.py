"""The public surface: every name in ``__all__`` imports, is documented, and the
package map in ARCHITECTURE.md names every module of the package."""

import importlib
import pathlib

import pytest

import iqdb_ivf_jax
from iqdb_ivf_jax import functional

ROOT = pathlib.Path(__file__).resolve().parents[1]
# citations of documents outside the repository (spelled in two parts, so this
# file does not match itself)
_OUTSIDE = ("../shared/" + "reference", "behaviour" + ".md", "behaviour" + " §")


@pytest.mark.parametrize("name", iqdb_ivf_jax.__all__)
def test_every_public_name_imports_and_has_a_docstring(name):
    obj = getattr(iqdb_ivf_jax, name)
    assert obj is not None
    assert (getattr(obj, "__doc__", None) or "").strip(), f"{name} has no docstring"


@pytest.mark.parametrize("name", functional.__all__)
def test_every_functional_name_imports(name):
    assert callable(getattr(functional, name)) or name == "IvfState"


def test_all_lists_no_private_or_missing_name():
    names = iqdb_ivf_jax.__all__
    assert len(names) == len(set(names))
    assert not [n for n in names if n.startswith("_")]
    assert not [n for n in names if not hasattr(iqdb_ivf_jax, n)]


def test_architecture_map_names_every_module():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    pkg = ROOT / "iqdb_ivf_jax"
    modules = sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*.py") if p.name != "__init__.py")
    missing = [m for m in modules if f"`{m}`" not in text]
    assert not missing, f"ARCHITECTURE.md does not map {missing}"
    for m in modules:  # and every mapped module imports
        importlib.import_module("iqdb_ivf_jax." + m[:-3].replace("/", "."))


def test_nothing_in_the_repository_points_outside_it():
    bad = []
    for p in [*ROOT.glob("*.md"), *ROOT.rglob("iqdb_ivf_jax/**/*.py"), *ROOT.rglob("tests/*.py")]:
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if any(m in line for m in _OUTSIDE):
                bad.append(f"{p.relative_to(ROOT)}:{i}")
    assert not bad, bad
