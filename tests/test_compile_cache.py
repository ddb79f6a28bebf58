"""The persistent compilation cache: on by default in the user's cache folder,
off or moved by ``IQDB_IVF_JAX_CACHE``, a folder the user chose left alone, and a
second process served from it. Each case runs in a fresh interpreter: JAX reads
the setting once per process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import iqdb_ivf_jax
from iqdb_ivf_jax import InvalidArgumentError

ROOT = Path(__file__).resolve().parents[1]

_REPORT = """
import json, jax, iqdb_ivf_jax
print(json.dumps({"dir": jax.config.jax_compilation_cache_dir,
                  "min": jax.config.jax_persistent_cache_min_compile_time_secs}))
"""

_COMPILE_ONE = """
import json, numpy as np
from jax import monitoring
from iqdb_ivf_jax import IvfConfig, IvfIndex
n = [0]
def on(name, secs, **_):  # fires on a cache hit too
    n[0] += name.endswith("backend_compile_duration")
def hit(name, **_):
    n[0] -= name == "/jax/compilation_cache/cache_hits"
monitoring.register_event_duration_secs_listener(on)
monitoring.register_event_listener(hit)
x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
idx = IvfIndex(4, "euclidean", IvfConfig(n_clusters=2, n_probes=2))
idx.train(x); idx.insert_batch(range(64), x); idx.search(x[0], k=3)
print(json.dumps({"programs": n[0]}))
"""


def _run(code, env_extra, drop=()):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env.pop("IQDB_IVF_JAX_CACHE", None)
    env.update(env_extra)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_cache_folder_is_under_the_user_cache_home(tmp_path):
    got = _run(_REPORT, {"XDG_CACHE_HOME": str(tmp_path)})
    assert got["dir"] == str(tmp_path / "iqdb_ivf_jax" / "xla")
    assert got["min"] == 0.0
    assert (tmp_path / "iqdb_ivf_jax" / "xla").is_dir()


@pytest.mark.parametrize("value", ["off", "0", "FALSE", ""])
def test_environment_variable_turns_it_off(tmp_path, value):
    got = _run(_REPORT, {"XDG_CACHE_HOME": str(tmp_path), "IQDB_IVF_JAX_CACHE": value})
    assert not got["dir"]
    assert not (tmp_path / "iqdb_ivf_jax").exists()


def test_environment_variable_path_is_used(tmp_path):
    got = _run(_REPORT, {"IQDB_IVF_JAX_CACHE": str(tmp_path / "mine")})
    assert got["dir"] == str(tmp_path / "mine")


def test_a_folder_the_user_chose_is_left_alone(tmp_path):
    chosen = str(tmp_path / "theirs")
    got = _run(_REPORT, {"JAX_COMPILATION_CACHE_DIR": chosen, "XDG_CACHE_HOME": str(tmp_path)})
    assert got["dir"] == chosen
    assert not (tmp_path / "iqdb_ivf_jax").exists()


def test_an_unwritable_cache_home_does_not_break_import(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    got = _run(_REPORT, {"XDG_CACHE_HOME": str(blocker)})
    assert not got["dir"]


def test_a_second_process_compiles_nothing(tmp_path):
    env = {"IQDB_IVF_JAX_CACHE": str(tmp_path / "xla")}
    first = _run(_COMPILE_ONE, env)["programs"]
    second = _run(_COMPILE_ONE, env)["programs"]
    assert first > 5
    assert second == 0, f"{second} of {first} programs compiled again"


def test_set_compilation_cache_rejects_a_non_path():
    with pytest.raises(InvalidArgumentError, match="folder path or None"):
        iqdb_ivf_jax.set_compilation_cache(42)  # type: ignore[arg-type]
