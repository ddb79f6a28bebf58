"""A stateful property test: random sequences of every mutation, search, save
and load, checked against a brute-force model after each step.

The model is a dict ``id -> (vector, metadata)``. Searches probe every list (and
IVF-PQ re-ranks every candidate exactly), so the index must return the model's
exact top-k, filtered or not, on both batch paths. A call the model says must
fail (a duplicate id, a missing id, too few rows to retrain) must raise the
documented error and change nothing. ``IQDB_STATEFUL_EXAMPLES`` runs more
examples than CI does.
"""

import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from iqdb_ivf_jax import (
    DuplicateIdError,
    Filter,
    InvalidConfigError,
    IvfConfig,
    IvfIndex,
    NotFoundError,
)

DIM = 8
N_LISTS = 4
GROUPS = 3
_EXAMPLES = int(os.environ.get("IQDB_STATEFUL_EXAMPLES", "5"))

# ids: small ints and a few strings, so collisions (duplicates, replacements) are common
ID = st.one_of(st.integers(0, 40), st.sampled_from(["a", "b", "c", "d"]))
IDS = st.lists(ID, min_size=1, max_size=6, unique=True)
SEED = st.integers(0, 2**32 - 1)
GROUP = st.one_of(st.none(), st.integers(0, GROUPS - 1))


def _rows(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _meta(group):
    return None if group is None else {"g": group}


class IndexMachine(RuleBasedStateMachine):
    """Drives one index and its model; subclasses pick the configuration."""

    config: IvfConfig
    min_retrain = N_LISTS  # live rows retrain needs
    TRAIN_ROWS = 64

    def __init__(self):
        super().__init__()
        self.model: dict = {}
        self.tmp = tempfile.TemporaryDirectory()
        self.saves = 0
        self.bulk_done = False

    def teardown(self):
        self.tmp.cleanup()

    @initialize(seed=SEED)
    def build(self, seed):
        self.index = IvfIndex(DIM, "euclidean", self.config)
        self.index.train(_rows(seed, self.TRAIN_ROWS))

    # --- mutations -------------------------------------------------------------

    def _expect_unchanged(self, exc, fn):
        before = len(self.index)
        with pytest.raises(exc):
            fn()
        assert len(self.index) == before

    @rule(ids=IDS, seed=SEED, group=GROUP)
    def insert_batch(self, ids, seed, group):
        x = _rows(seed, len(ids))
        metas = [_meta(group)] * len(ids)
        if any(i in self.model for i in ids):
            self._expect_unchanged(DuplicateIdError, lambda: self.index.insert_batch(ids, x, metas))
            return
        self.index.insert_batch(ids, x, metas)
        self.model.update({i: (v, m) for i, v, m in zip(ids, x, metas)})

    @rule(id_=ID, seed=SEED, group=GROUP)
    def insert_one(self, id_, seed, group):
        x = _rows(seed, 1)[0]
        if id_ in self.model:
            self._expect_unchanged(
                DuplicateIdError, lambda: self.index.insert(id_, x, _meta(group))
            )
            return
        self.index.insert(id_, x, _meta(group))
        self.model[id_] = (x, _meta(group))

    @rule(ids=IDS, seed=SEED, group=GROUP)
    def upsert(self, ids, seed, group):
        x = _rows(seed, len(ids))
        self.index.upsert(ids, x, [_meta(group)] * len(ids))
        self.model.update({i: (v, _meta(group)) for i, v in zip(ids, x)})

    @rule(ids=IDS)
    def delete(self, ids):
        if any(i not in self.model for i in ids):
            self._expect_unchanged(NotFoundError, lambda: self.index.delete(ids))
            return
        self.index.delete(ids if len(ids) > 1 else ids[0])
        for i in ids:
            del self.model[i]

    @precondition(lambda self: not self.bulk_done)
    @rule(seed=SEED)
    def bulk_insert(self, seed):
        """Enough rows for an IVF-PQ retrain (fresh ids, once)."""
        ids = list(range(1000, 1300))
        x = _rows(seed, len(ids))
        self.index.insert_batch(ids, x)
        self.model.update({i: (v, None) for i, v in zip(ids, x)})
        self.bulk_done = True

    @rule()
    def retrain(self):
        if 0 < len(self.model) < self.min_retrain:
            self._expect_unchanged(InvalidConfigError, self.index.retrain)
            return
        self.index.retrain()

    @precondition(lambda self: self.saves < 3)
    @rule(mmap=st.booleans())
    def save_and_load(self, mmap):
        """Save (over the last save) and load; IVF-PQ maybe with its raw vectors
        left in the file (``mmap=True``), which later writes must handle."""
        path = os.path.join(self.tmp.name, "index")
        before = self._search_batch(_rows(self.saves, 8), 5, None)
        self.index.save(path)
        self.index = IvfIndex.load(path, mmap=mmap and self.index.config.use_pq)
        self.saves += 1
        after = self._search_batch(_rows(self.saves - 1, 8), 5, None)
        np.testing.assert_array_equal(before[1], after[1])
        np.testing.assert_array_equal(before[0].view(np.uint32), after[0].view(np.uint32))

    # --- checks ----------------------------------------------------------------

    def _exact(self, q: np.ndarray, k: int, group):
        """The model's ``k`` nearest ``(ids, distances)`` (float64), and whether the
        ``k``-th is separated from the next (else only distances are compared)."""
        items = [(i, v) for i, (v, m) in self.model.items() if group is None or m == {"g": group}]
        if not items:
            return [], np.zeros(0), True
        ids = [i for i, _ in items]
        x = np.stack([v for _, v in items]).astype(np.float64)
        d = np.sqrt(((x - q.astype(np.float64)) ** 2).sum(axis=1))
        order = np.argsort(d, kind="stable")[:k]
        sep = len(d) <= k or np.sort(d)[k] - d[order[-1]] > 1e-4
        return [ids[j] for j in order], d[order], sep

    def _search_batch(self, q, k, flt):
        return self.index.search_arrays(q, k, filter=flt, n_probes=N_LISTS, refine=self._refine())

    def _refine(self):
        return max(len(self.model), 1) if self.config.use_pq else None

    @rule(seed=SEED, k=st.sampled_from([1, 5]), group=GROUP, batch=st.booleans())
    def search(self, seed, k, group, batch):
        flt = None if group is None else Filter.eq("g", group)
        q = _rows(seed, 8 if batch else 1)
        if batch:
            d, ids = self._search_batch(q, k, flt)
            got = [[i for i in row.tolist() if i is not None and i != -1] for row in ids]
            dists = [row[: len(g)] for row, g in zip(d, got)]
        else:
            hits = self.index.search(q[0], k, filter=flt, n_probes=N_LISTS, refine=self._refine())
            got, dists = [[h.id for h in hits]], [np.array([h.distance for h in hits])]
        for qi, ids, dd in zip(q, got, dists):
            want, wd, sep = self._exact(qi, k, group)
            assert len(ids) == len(want)
            np.testing.assert_allclose(dd, wd, rtol=1e-4, atol=1e-5)
            if sep:
                assert set(ids) == set(want)

    @invariant()
    def sizes_and_contents_agree(self):
        if not hasattr(self, "index"):
            return
        assert len(self.index) == len(self.model)
        for i in list(self.model)[:3]:
            assert i in self.index
            if not self.config.use_pq:
                vec, meta = self.index.get(i)
                np.testing.assert_array_equal(vec, self.model[i][0])
                assert meta == self.model[i][1]


class FlatMachine(IndexMachine):
    config = IvfConfig(n_clusters=N_LISTS, n_probes=2, kmeans_max_iterations=5)


class SpilledFlatMachine(IndexMachine):
    config = IvfConfig(n_clusters=N_LISTS, n_probes=2, kmeans_max_iterations=5, spill_lambda=1.0)


class ResidualPqMachine(IndexMachine):
    config = IvfConfig(
        n_clusters=N_LISTS,
        n_probes=2,
        use_pq=True,
        pq_subvectors=4,
        pq_by_residual=True,
        kmeans_max_iterations=5,
    )
    min_retrain = 256
    TRAIN_ROWS = 512


_SETTINGS = settings(
    max_examples=_EXAMPLES,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestFlat = FlatMachine.TestCase
TestFlat.settings = _SETTINGS
TestSpilledFlat = SpilledFlatMachine.TestCase
TestSpilledFlat.settings = _SETTINGS
TestResidualPq = ResidualPqMachine.TestCase
TestResidualPq.settings = _SETTINGS
