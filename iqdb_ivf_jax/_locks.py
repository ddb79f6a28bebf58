"""The concurrency contract of an index: many searches or one writer, and commits
that a Ctrl-C cannot split.

:class:`ReadWriteLock` lets any number of threads search at once while writers
(insert, delete, upsert, train, retrain) run one at a time and alone: a writer
waits for the searches in flight and blocks new ones until it has committed, so
every search sees one consistent state (device arrays, block layout and the slot
-> id table it was computed with). :func:`deferred_interrupt` holds back a
SIGINT delivered while a mutation swaps in its new state and bookkeeping, and
raises it once the index is consistent again.
"""

import contextlib
import signal
import threading
from collections.abc import Iterator


class ReadWriteLock:
    """Shared (read) / exclusive (write) lock; writers are preferred.

    The write side is reentrant for the thread that holds it (a writer may call
    another writer, e.g. a delete that compacts), and that thread may also read.
    A waiting writer blocks new readers, so a steady stream of searches cannot
    starve it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None  # thread id of the holder
        self._depth = 0
        self._waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        if self._writer == me:  # a writer reading its own index
            yield
            return
        with self._cond:
            while self._writer is not None or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._depth += 1
            else:
                self._waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._waiting -= 1
                self._writer, self._depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not self._depth:
                    self._writer = None
                    self._cond.notify_all()


_committing = threading.local()


def committing() -> bool:
    """Whether this thread is inside :func:`deferred_interrupt` (tests use it to
    inject interrupts only where a signal could land)."""
    return getattr(_committing, "depth", 0) > 0


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) for the duration of the block, then raise it.

    Only the main thread receives signals, and only there can a handler be set:
    elsewhere, or when the program installed its own SIGINT handler, the signal
    is not held. Used around the few lines that swap a mutation's results in.
    """
    _committing.depth = getattr(_committing, "depth", 0) + 1
    try:
        with _held_sigint():
            yield
    finally:
        _committing.depth -= 1


@contextlib.contextmanager
def _held_sigint() -> Iterator[None]:
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    pending: list[object] = []

    def hold(signum, frame):
        pending.append(frame)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if pending:
            raise KeyboardInterrupt
