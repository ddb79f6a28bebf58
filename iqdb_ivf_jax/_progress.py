"""Progress bars for long host loops (streamed adds), on tqdm when it is installed.

tqdm is an optional dependency (``pip install 'iqdb-ivf-jax[progress]'``),
imported only when a bar is asked for; bars run on the host, never inside jit.
"""

import sys
from typing import Any


class _NoBar:
    """Stands in for a bar when none is shown."""

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(progress: bool | None, *, total: int | None, desc: str) -> Any:
    """A bar with ``update(n)`` and ``close()``.

    Args:
        progress: True: a tqdm bar (ImportError naming the install command when
            tqdm is missing); False: none; None: a bar only when standard error
            is a terminal and tqdm is installed (off in scripts, CI and logs).
        total: rows expected (None when unknown, e.g. a generator).
        desc: the bar's label.
    """
    if progress is False:
        return _NoBar()
    if progress is None and not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError as e:
        if progress is None:
            return _NoBar()
        raise ImportError(
            "progress=True needs tqdm: pip install 'iqdb-ivf-jax[progress]' (or pip install tqdm)"
        ) from e
    return tqdm(total=total, desc=desc, unit="rows", unit_scale=True)
