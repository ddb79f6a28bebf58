"""`IntIdMap` against a dict model, and `EntryTable`'s move from its compact
int-id representation to the general one (and back through compaction)."""

import numpy as np
import pytest

from iqdb_ivf_jax import IvfConfig, IvfIndex
from iqdb_ivf_jax._id_map import IntIdMap


def test_int_id_map_matches_a_dict_under_random_operations():
    rng = np.random.default_rng(3)
    m, model = IntIdMap(), {}
    next_slot = 0
    for step in range(3000):
        op = rng.random()
        if op < 0.45:  # a batch of new ids (small: the recent dict; large: a merge)
            n = int(rng.choice([1, 5, 70, 300]))
            cand = np.unique(rng.integers(0, 5000, n))
            new = np.array([c for c in cand.tolist() if c not in model], np.int64)
            slots = np.arange(next_slot, next_slot + new.size, dtype=np.int64)
            next_slot += new.size
            m.add(new, slots)
            model.update(zip(new.tolist(), slots.tolist()))
        elif op < 0.85 and model:
            victim = int(rng.choice(list(model)))
            assert m.pop(victim) == model.pop(victim)
        else:
            probe = rng.integers(0, 5000, 20)
            assert m.contains_any(probe) == any(int(p) in model for p in probe)
            for p in probe.tolist():
                assert m.get(p) == model.get(p)
        if step % 200 == 0:
            assert len(m) == len(model)
            assert sorted(m.slots().tolist()) == sorted(model.values())
    with pytest.raises(KeyError):
        m.pop(10**9)


def test_entry_table_switches_representation_and_back():
    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    idx = IvfIndex(8, "euclidean", IvfConfig(n_clusters=4, n_probes=4))
    idx.train(x)
    idx.insert_batch(range(200), x[:200])
    assert idx._entries.int_ids is not None and idx._entries.id_slot is None
    before = idx.search_arrays(x[:5], 5)
    idx.insert("a str id", x[200])  # leaves the int-only representation for good
    assert idx._entries.int_ids is None and idx._entries.id_slot is not None
    assert idx.get(7)[0].tobytes() == x[7].tobytes() and 7 in idx and "a str id" in idx
    idx.delete("a str id")
    after = idx.search_arrays(x[:5], 5)
    assert before[0].tobytes() == after[0].tobytes() and before[1].tolist() == after[1].tolist()
    assert idx.search(x[7], 1)[0].id == 7
    idx.retrain()  # a fresh table of int ids only: compact again
    assert idx._entries.int_ids is not None
    assert idx.search(x[7], 1)[0].id == 7 and len(idx) == 200
    idx.insert(2**63, x[250])  # an int past int64: the general representation
    assert idx._entries.int_ids is None and idx.search(x[250], 1)[0].id == 2**63
