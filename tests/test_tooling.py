"""House rules that keep the tree readable: ruff lint, ruff format and mypy on the
public API (configured in pyproject.toml) run as part of the test suite."""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("args", [("check",), ("format", "--check")], ids=["lint", "format"])
def test_ruff(args):
    if shutil.which("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    r = _run("ruff", *args, ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_public_api():
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")
    r = _run(sys.executable, "-m", "mypy", "--no-incremental")
    assert r.returncode == 0, r.stdout + r.stderr
