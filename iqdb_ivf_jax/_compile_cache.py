"""The persistent XLA compilation cache, on by default.

A fresh process compiles every kernel it runs; JAX's persistent cache keeps the
compiled programs on disk so the next process loads them instead. JAX leaves that
cache off; importing this package turns it on in the user's cache folder
(``$XDG_CACHE_HOME/iqdb_ivf_jax/xla`` or ``~/.cache/iqdb_ivf_jax/xla``) unless
the user already chose a cache folder (``jax_compilation_cache_dir``, or JAX's
``JAX_COMPILATION_CACHE_DIR``) or opted out with the environment variable
``IQDB_IVF_JAX_CACHE``:

- ``off`` (also ``0``, ``false``, ``no``, empty): leave JAX's cache as it is;
- a folder path: use that folder.

:func:`set_compilation_cache` changes it from code. JAX reads the setting once,
at the first compilation of the process, so either must happen before it.
When this package turns the cache on it also caches every program however fast
it compiled (``jax_persistent_cache_min_compile_time_secs = 0``): ours take
tenths of a second each, below JAX's one-second default, and there are dozens.
"""

import os
from pathlib import Path

import jax

ENV_VAR = "IQDB_IVF_JAX_CACHE"
_OFF = {"off", "0", "false", "no", ""}


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/iqdb_ivf_jax/xla``, else ``~/.cache/iqdb_ivf_jax/xla``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "iqdb_ivf_jax" / "xla"


def set_compilation_cache(path: "str | os.PathLike | None") -> None:
    """Use ``path`` as JAX's persistent compilation cache (None: turn it off).

    Affects the whole process (JAX's cache is global) and takes effect only
    before the process's first compilation; later calls change nothing JAX has
    already read. With a folder, every program is cached regardless of its
    compile time.

    Raises:
        InvalidArgumentError: ``path`` is not a str, path-like or None.
    """
    from ._errors import InvalidArgumentError

    if path is None:
        jax.config.update("jax_compilation_cache_dir", None)
        return
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgumentError(
            f"path must be a folder path or None, got {type(path).__name__}; "
            "pass e.g. '~/.cache/iqdb_ivf_jax/xla', or None to turn the cache off"
        )
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(os.fspath(path)))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def enable_default_cache() -> "str | None":
    """Turn the cache on unless the user chose a folder or opted out (see the
    module docstring). Returns the folder now in use, or None. Never raises:
    a cache that cannot be set up only costs compile time."""
    chosen = jax.config.jax_compilation_cache_dir
    if chosen:
        return chosen
    setting = os.environ.get(ENV_VAR)
    if setting is not None and setting.strip().lower() in _OFF:
        return None
    path = Path(setting).expanduser() if setting else default_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
        set_compilation_cache(path)
    except (OSError, ValueError):  # read-only home, bad path: run without the cache
        return None
    return str(path)
