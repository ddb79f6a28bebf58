"""Save / load (`iqdb_ivf_jax._persist`): bit-identical round trips, atomic
replacement under crashes (simulated in-process at every step, and real SIGKILLs),
validation of damaged or edited saves, and no pickle anywhere.

Indexes are small (600 x 8) and built once per module: the JAX compilations of
training and search are most of this file's time.
"""

import contextlib
import dataclasses
import hashlib
import json
import multiprocessing
import os
import pickle
import shutil
import signal
import struct
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import safetensors.numpy

from iqdb_ivf_jax import IvfConfig, IvfIndex
from iqdb_ivf_jax import _persist as persist
from iqdb_ivf_jax._entries import EntryTable
from iqdb_ivf_jax._layout import BlockLayout
from iqdb_ivf_jax._persist import IndexFileError, load_index, save_index
from iqdb_ivf_jax._state import IvfState

D, N = 8, 600
_rng = np.random.default_rng(20240611)
X = _rng.standard_normal((N, D)).astype(np.float32)
Q = _rng.standard_normal((6, D)).astype(np.float32)
NEW = _rng.standard_normal((40, D)).astype(np.float32)

MIXED_IDS = (
    [0, 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64 - 2, "héllo wörld", "日本語", "\ud800lone", "a"]
    + [b"\x00", b"\x00\xff\x00", b"bytes id", "x" * 40]
    + list(range(10_000, 10_000 + N - 14))
)
INT_IDS = list(range(N))
WEIRD_META = {
    "nan": float("nan"),
    "nan_payload": struct.unpack("<d", struct.pack("<Q", 0xFFF000000000DEAD))[0],
    "inf": float("inf"),
    "ninf": float("-inf"),
    "negzero": -0.0,
    "tiny": 5e-324,
    "big": 2**63 - 1,
    "small": -(2**63),
    "flag": True,
    "none": None,
    "text": "ü\u0000\ud800",
}


def _metas(n):
    out = []
    for i in range(n):
        if i == 3:
            out.append(dict(WEIRD_META))
        elif i == 5:
            out.append({})
        elif i % 4 == 0:
            out.append({"grp": i % 3, "w": i / 7, "tag": f"t{i}"})
        else:
            out.append(None)
    return out


def _cfg(**kw):
    return IvfConfig(
        n_clusters=6, n_probes=3, seed=11, kmeans_init="random", kmeans_max_iterations=6, **kw
    )


PQ = {"use_pq": True, "pq_subvectors": 4}
RES = {**PQ, "pq_by_residual": True}
# name: (metric, config fields, ids, metadata?, ids to delete)
CASES = {
    "flat_l2": ("euclidean", {}, MIXED_IDS, True, MIXED_IDS[3:40:3]),
    "flat_cos": ("cosine", {}, INT_IDS, False, []),
    "flat_dot": ("dot_product", {}, INT_IDS, True, INT_IDS[:9]),
    "flat_l1": ("manhattan", {}, INT_IDS, False, []),
    "flat_ham": ("hamming", {}, INT_IDS, False, INT_IDS[100:104]),
    "pq_l2": ("euclidean", {**PQ, "pq_refine_factor": 0}, INT_IDS, False, []),
    "pq_l2_res": ("euclidean", {**RES, "pq_refine_factor": 3}, INT_IDS, True, INT_IDS[7:30]),
    "pq_dot_res": ("dot_product", {**RES, "pq_refine_factor": 2}, INT_IDS, False, []),
    "pq_codes_only": (
        "euclidean",
        {**RES, "pq_refine_factor": 0, "keep_raw_vectors": False},
        INT_IDS,
        True,
        INT_IDS[::50],
    ),
    "spill_flat": ("euclidean", {"spill_lambda": 1.0}, INT_IDS, False, INT_IDS[50:70]),
    "spill_pq": (
        "dot_product",
        {**RES, "pq_refine_factor": 0, "spill_lambda": 1.0},
        MIXED_IDS,
        True,
        MIXED_IDS[::37],
    ),
}
LIST_PATH = set(CASES) - {"flat_l1", "flat_ham"}  # the metrics path="list" takes


def build(name: str) -> IvfIndex:
    """A fresh index of case ``name`` (deterministic: same bits every call)."""
    metric, cfg, ids, meta, deletes = CASES[name]
    ix = IvfIndex(D, metric, _cfg(**cfg))
    ix.train(X)
    ix.insert_batch(ids, X, _metas(N) if meta else None)
    if deletes:
        ix.delete(list(deletes))
    return ix


@pytest.fixture(scope="module")
def built():
    """Indexes built on demand, once per module."""
    cache: dict[str, IvfIndex] = {}

    def get(name):
        if name not in cache:
            cache[name] = build(name)
        return cache[name]

    return get


# ------------------------------------------------------------------- comparing
def canon(x):
    """A comparable form: floats by their bits (NaN payloads and -0.0 included),
    every value tagged with its type."""
    if isinstance(x, float):
        return ("float", struct.pack("<d", x))
    if isinstance(x, dict):
        return ("dict", tuple((k, canon(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(canon(v) for v in x))
    if isinstance(x, np.ndarray):
        return ("array", x.dtype.str, x.shape, x.tobytes())
    return (type(x).__name__, x)


def fingerprint(ix: IvfIndex, k: int = 7):
    """``len`` and a search (distance bits, ids) — enough to tell two indexes apart."""
    if not ix.is_trained or not len(ix):
        return len(ix), ix.is_trained
    dist, ids = ix.search_arrays(Q, k, path="query")
    return len(ix), dist.view(np.uint32).tobytes(), canon(ids.tolist())


def assert_internals_equal(a: IvfIndex, b: IvfIndex) -> None:
    """Every field of the index, bit for bit (the id dict in order)."""
    assert (a.dim, a.metric, a.config) == (b.dim, b.metric, b.config)
    assert (a._next_seq, a._kmeans_iterations) == (b._next_seq, b._kmeans_iterations)
    assert canon(a._kmeans_inertia) == canon(b._kmeans_inertia)
    assert (a._state is None) == (b._state is None)
    if a._state is not None:
        for f in dataclasses.fields(IvfState):
            va, vb = getattr(a._state, f.name), getattr(b._state, f.name)
            if isinstance(va, jax.Array):
                assert canon(np.asarray(va)) == canon(np.asarray(vb)), f.name
            else:
                assert va == vb, f.name
        la, lb = vars(a._layout), vars(b._layout)
        assert la.keys() == lb.keys()
        for key in la:
            assert canon(la[key]) == canon(lb[key]), key
    ea, eb = vars(a._entries), vars(b._entries)
    assert ea.keys() == eb.keys()
    assert (ea["int_ids"] is None) == (eb["int_ids"] is None)  # the same id representation
    assert canon(a._entries.live_ids()) == canon(b._entries.live_ids())  # in order
    assert canon(a._entries.own_slots()) == canon(b._entries.own_slots())
    assert canon(a._entries.ids_for_slots(np.arange(a._entries.n_slots))) == canon(
        b._entries.ids_for_slots(np.arange(b._entries.n_slots))
    )
    assert canon(list(ea["meta"].items())) == canon(list(eb["meta"].items()))
    for key in ("slot_int", "slot_seq", "slot_twin", "n_wide_ids", "meta_bytes"):
        assert canon(ea[key]) == canon(eb[key]), key


def assert_same(a: IvfIndex, b: IvfIndex, name: str | None = None) -> None:
    """Observable behaviour: searches (both paths), hits with metadata, get, stats."""
    assert len(a) == len(b) and a.is_trained == b.is_trained
    assert a.cluster_stats() == b.cluster_stats()
    if a.is_trained and len(a):
        paths = ["query", "list"] if name in LIST_PATH else ["query"]
        for path in paths:
            da, ia = a.search_arrays(Q, 7, path=path)
            db, ib = b.search_arrays(Q, 7, path=path)
            assert da.view(np.uint32).tobytes() == db.view(np.uint32).tobytes(), path
            assert canon(ia.tolist()) == canon(ib.tolist()), path
        ha, hb = a.search_batch(Q, 7, path="query"), b.search_batch(Q, 7, path="query")
        assert canon([[dataclasses.astuple(h) for h in r] for r in ha]) == canon(
            [[dataclasses.astuple(h) for h in r] for r in hb]
        )
        some = a._entries.live_ids()[:: max(1, len(a) // 7)][:8]
        for id_ in some:
            (va, ma), (vb, mb) = a.get(id_), b.get(id_)
            assert va.tobytes() == vb.tobytes() and canon(ma) == canon(mb)
    ea, eb = a.stats().extra, b.stats().extra
    for key in set(ea) | set(eb):
        if key not in ("memory", "last_search", "bytes_per_vector"):  # host object sizes
            assert canon(ea[key]) == canon(eb[key]), key
    ma, mb = ea["memory"], eb["memory"]
    for key in ma:
        if key not in ("id_maps", "metadata", "score_buffer"):  # Python object sizes
            assert ma[key] == mb[key], key


def round_trip(ix: IvfIndex, path: Path) -> IvfIndex:
    nbytes = save_index(ix, path)
    assert sorted(os.listdir(path)) == ["arrays.safetensors", "manifest.json"]
    assert nbytes == sum(p.stat().st_size for p in path.iterdir())
    loaded = load_index(path)
    assert loaded._disk_bytes == nbytes
    return loaded


# ------------------------------------------------------------------ round trip
@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_bit_identical(built, tmp_path, name):
    ix = built(name)
    loaded = round_trip(ix, tmp_path / "idx")
    assert_internals_equal(ix, loaded)
    assert_same(ix, loaded, name)
    extra = loaded.stats().extra
    assert (extra["tombstones"] > 0) == bool(CASES[name][4])  # deletes left holes
    assert (extra["spilled_rows"] > 0) == ("spill" in name)
    if name == "flat_l2":  # a metadata filter walks the id dict in order
        for flt in ({"grp": 1}, {"nan": {"$ne": 1.0}}):
            da, ia = ix.search_arrays(Q, 7, filter=flt, path="query")
            db, ib = loaded.search_arrays(Q, 7, filter=flt, path="query")
            assert da.tobytes() == db.tobytes() and canon(ia.tolist()) == canon(ib.tolist())


def test_round_trip_untrained_and_empty(tmp_path):
    cfg = _cfg(**PQ, spill_lambda=0.5).with_n_probes(2)
    for i, ix in enumerate([IvfIndex(D, "dot_product", cfg), IvfIndex(D, "cosine")]):
        loaded = round_trip(ix, tmp_path / f"u{i}")
        assert not loaded.is_trained and len(loaded) == 0
        assert_internals_equal(ix, loaded)
        assert_same(ix, loaded)
    ix = IvfIndex(D, "euclidean", _cfg())
    ix.train(X)  # trained, empty
    loaded = round_trip(ix, tmp_path / "empty")
    assert_internals_equal(ix, loaded)
    assert_same(ix, loaded)
    assert loaded.search(Q[0], 3) == []
    ix.insert_batch([1, 2], X[:2])  # usable after load
    loaded.insert_batch([1, 2], X[:2])
    assert_internals_equal(ix, loaded)
    assert fingerprint(ix) == fingerprint(loaded)


@pytest.mark.parametrize("name", ["flat_l2", "spill_pq"])
def test_mutations_after_load_match_original(built, tmp_path, name):
    built(name)  # compile once through the shared fixture
    ix = build(name)
    loaded = round_trip(ix, tmp_path / "idx")
    new_ids = [f"new-{i}" for i in range(20)] + list(range(50_000, 50_020))
    metas = [{"new": i} if i % 2 else None for i in range(40)]
    live = ix._entries.live_ids()
    gone = live[1:30:4]
    for target in (ix, loaded):
        target.insert_batch(new_ids, NEW, metas)
        target.delete(gone + new_ids[:3])
        target.insert(new_ids[0], NEW[5], {"again": True})
    assert_internals_equal(ix, loaded)
    assert_same(ix, loaded, name)
    # and the mutated copy saves and loads again
    again = round_trip(loaded, tmp_path / "again")
    assert_internals_equal(loaded, again)


def test_device_argument(built, tmp_path):
    ix = built("flat_l2")
    save_index(ix, tmp_path / "idx")
    dev = jax.devices()[0]
    loaded = load_index(tmp_path / "idx", device=dev)
    assert loaded.state.vectors.devices() == {dev}
    with pytest.raises(TypeError):
        load_index(tmp_path / "idx", device="cpu:0")


def test_persisted_fields_cover_the_classes():
    """A field added to IvfState, BlockLayout or EntryTable must be persisted."""
    names = {f.name for f in dataclasses.fields(IvfState)}
    # interleave is where the rows are stored, not what they are: saves hold block order
    assert names == set(persist._STATE_ARRAYS) | {"metric", "by_residual", "interleave"}
    assert set(vars(BlockLayout(3, 8))) == persist._LAYOUT_ATTRS
    assert set(vars(EntryTable(4, spills=True))) == persist._ENTRY_ATTRS


# ----------------------------------------------------------------- overwriting
def test_save_over_existing_save_replaces_it(built, tmp_path):
    a, b = built("flat_l2"), built("pq_l2_res")
    path = tmp_path / "idx"
    save_index(a, path)
    save_index(b, path)
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # no .old / .tmp-* left behind
    assert fingerprint(load_index(path)) == fingerprint(b)
    save_index(a, str(path))
    loaded = load_index(str(path))
    assert_internals_equal(a, loaded)
    assert sorted(os.listdir(tmp_path)) == ["idx"]


def test_save_refuses_to_replace_what_is_not_a_save(built, tmp_path):
    ix = built("flat_l2")
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(IndexFileError, match="not a saved index"):
        save_index(ix, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "keep me"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(IndexFileError, match="other files"):
        save_index(ix, other)
    assert sorted(os.listdir(other)) == ["notes.txt"]
    save_index(ix, tmp_path / "a" / "b" / "idx")  # missing parents are created
    assert len(load_index(tmp_path / "a" / "b" / "idx")) == len(ix)


def test_missing_save_raises_index_file_error(tmp_path):
    with pytest.raises(IndexFileError, match="no saved index"):
        load_index(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(IndexFileError, match="not a directory"):
        load_index(tmp_path / "f")


# --------------------------------------------------------------- crash safety
class _Crash(BaseException):
    """A simulated crash: skips every ``except Exception`` clean-up, as a kill would."""


_OPS = [(os, "mkdir"), (os, "open"), (os, "write"), (os, "fsync"), (os, "close"),
        (os, "rename"), (os, "replace"), (os, "unlink"), (shutil, "rmtree")]  # fmt: skip


def _save_with_crash(ix, path, k: int, mode: str) -> int | None:
    """Save, crashing at the ``k``-th filesystem call (``mode``: before it runs,
    after it, or, for a write, after writing half). None if it crashed, else the
    number of filesystem calls the save made."""
    calls = [0]
    saved = {(mod, name): getattr(mod, name) for mod, name in _OPS}

    def wrap(mod, name):
        real = saved[(mod, name)]

        def op(*args, **kwargs):
            i = calls[0]
            calls[0] += 1
            if i != k:
                return real(*args, **kwargs)
            with contextlib.suppress(OSError):  # the call ran (and failed) just before
                if mode == "partial" and name == "write":
                    real(args[0], bytes(args[1])[: len(args[1]) // 2])
                elif mode in ("after", "partial"):
                    real(*args, **kwargs)
            raise _Crash(f"{name} #{i}")

        return op

    try:
        for mod, name in _OPS:
            setattr(mod, name, wrap(mod, name))
        try:
            save_index(ix, path)
        except _Crash:
            return None
        return calls[0]
    finally:
        for (mod, name), real in saved.items():
            setattr(mod, name, real)


def test_crash_at_every_step_leaves_old_or_new(built, tmp_path):
    old, new = built("flat_l2"), built("pq_l2_res")
    fp = {"old": fingerprint(old), "new": fingerprint(new)}
    path = tmp_path / "idx"
    runs = seen_new = fallbacks = 0
    for mode in ("before", "after", "partial"):
        k = 0
        while True:
            save_index(old, path)  # the previous save (also: recovery from the last crash)
            assert fingerprint(load_index(path)) == fp["old"]
            if _save_with_crash(new, path, k, mode) is not None:
                break
            runs += 1
            fallbacks += not path.exists()
            got = fingerprint(load_index(path))
            assert got in fp.values(), (mode, k)
            seen_new += got == fp["new"]
            k += 1
        assert k >= 10, (mode, k)  # every write, fsync and rename was a crash point
    assert runs >= 40 and seen_new and fallbacks  # both outcomes, and the .old fallback
    save_index(new, path)
    assert fingerprint(load_index(path)) == fp["new"]
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # the stale siblings are gone


def _child_save_loop(tpl_old, tpl_new, target, kill_at, ready):
    """In a child process: save the two templates over ``target`` in turn, forever;
    with ``kill_at >= 1``, exit abruptly (status 137) at that filesystem call."""
    old, new = load_index(tpl_old), load_index(tpl_new)
    if kill_at >= 1:
        calls = [0]

        def make(real):
            def op(*args, **kwargs):
                calls[0] += 1
                if calls[0] == kill_at:
                    os._exit(137)
                return real(*args, **kwargs)

            return op

        for mod, name in _OPS:
            setattr(mod, name, make(getattr(mod, name)))
    ready.set()
    i = 0
    while True:
        save_index(new if i % 2 == 0 else old, target)
        i += 1


def test_sigkill_during_save_leaves_old_or_new(built, tmp_path):
    """Child processes (forkserver: JAX is imported once) save over an existing save
    and die by SIGKILL at a random time, or by ``os._exit`` at every other filesystem
    call of a save; the save on disk is always the old index or the new one."""
    old, new = built("flat_l2"), built("pq_l2_res")
    fp = {"old": fingerprint(old), "new": fingerprint(new)}
    tpl_old, tpl_new = tmp_path / "tpl_old", tmp_path / "tpl_new"
    save_index(old, tpl_old)
    save_index(new, tpl_new)
    n_ops = _save_with_crash(new, tpl_new, -1, "before")  # filesystem calls of a save over one
    assert n_ops and n_ops >= 10
    t0 = time.perf_counter()
    for _ in range(5):
        save_index(new, tmp_path / "timing")
    save_s = (time.perf_counter() - t0) / 5
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["iqdb_ivf_jax._persist", __name__])
    rng = np.random.default_rng(7)
    runs = [("time", float(d)) for d in rng.uniform(0, 2.5 * save_s, 40)]
    runs += [("op", k) for k in range(1, n_ops + 1, 2)]  # test_crash_at_every_step: all
    outcomes = []
    for i, (how, when) in enumerate(runs):
        target = tmp_path / f"run{i}" / "idx"
        shutil.copytree(tpl_old, target)
        ready = ctx.Event()
        kill_at = int(when) if how == "op" else -1
        proc = ctx.Process(target=_child_save_loop, args=(tpl_old, tpl_new, target, kill_at, ready))
        proc.start()
        try:
            assert ready.wait(60), "child did not start"
            if how == "time":
                time.sleep(when)
                os.kill(proc.pid, signal.SIGKILL)
            proc.join(60)
            assert proc.exitcode in (-signal.SIGKILL, 137), (how, when, proc.exitcode)
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join()
            proc.close()
        got = fingerprint(load_index(target))
        assert got in fp.values(), (how, when)
        outcomes.append(got == fp["new"])
        shutil.rmtree(target.parent)
    assert len(outcomes) >= 50 and any(outcomes) and not all(outcomes)


# ----------------------------------------------------------------- corruption
@pytest.fixture(scope="module")
def bases(built, tmp_path_factory):
    """Pristine saves to damage: mixed ids, metadata and holes; spilled PQ; untrained."""
    root = tmp_path_factory.mktemp("bases")
    out = {}
    for name, ix in [
        ("flat_l2", built("flat_l2")),
        ("spill_pq", built("spill_pq")),
        ("untrained", IvfIndex(D, "euclidean", _cfg())),
    ]:
        save_index(ix, root / name)
        out[name] = root / name
    return out


def _fresh(base: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(base, dst)
    return dst


def _read_manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _rewrite(path: Path, manifest: dict | None = None, arrays: dict | None = None) -> None:
    """Write an edited save with consistent checksums."""
    manifest = _read_manifest(path) if manifest is None else manifest
    if arrays is not None:
        blob = safetensors.numpy.save(arrays)
        (path / "arrays.safetensors").write_bytes(blob)
        manifest["files"] = {
            "arrays.safetensors": {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
        }
    (path / "manifest.json").write_bytes(persist.manifest_text(manifest))


def _load_arrays(path: Path) -> dict:
    return dict(safetensors.numpy.load((path / "arrays.safetensors").read_bytes()))


def test_codes_only_save_with_row_norms_still_loads(built, tmp_path):
    """Codes-only saves from before the rows dropped their (never read) norms."""
    ix = built("pq_codes_only")
    save_index(ix, tmp_path / "idx")
    arrays = _load_arrays(tmp_path / "idx")
    assert arrays["state.norms"].shape[1] == 0
    nb, B = arrays["state.seqs"].shape
    arrays["state.norms"] = np.ones((nb, B), np.float32)
    _rewrite(tmp_path / "idx", arrays=arrays)
    loaded = IvfIndex.load(tmp_path / "idx")
    assert loaded.state.norms.shape == (nb, 0)
    assert fingerprint(loaded) == fingerprint(ix)


def _expect_error(path: Path, case: str, failures: list) -> None:
    """Loading must raise IndexFileError; a PQ save is tried with mmap=True too
    (its raw vectors are then streamed and mapped, not read into memory)."""
    for mmap in (False, True) if "pq" in case else (False,):
        try:
            load_index(path, mmap=mmap)
        except IndexFileError:
            continue
        except BaseException as e:  # noqa: BLE001 - the point: nothing else may escape
            failures.append(f"{case} (mmap={mmap}): {type(e).__name__}: {e}")
            continue
        failures.append(f"{case} (mmap={mmap}): loaded without error")


def test_truncated_flipped_and_missing_files(bases, tmp_path):
    rng = np.random.default_rng(1234)
    failures: list[str] = []
    n = 0
    for bname, base in bases.items():
        for fname in ("manifest.json", "arrays.safetensors"):
            size = (base / fname).stat().st_size
            cuts = sorted({0, 1, size - 1, *rng.integers(0, size, 12).tolist()})
            for cut in cuts:
                p = _fresh(base, tmp_path / "t")
                data = (p / fname).read_bytes()
                (p / fname).write_bytes(data[:cut])
                _expect_error(p, f"{bname}/{fname} cut at {cut}", failures)
                n += 1
            for pos in rng.integers(0, size, 16).tolist():
                p = _fresh(base, tmp_path / "t")
                data = bytearray((p / fname).read_bytes())
                flip = (
                    1 << int(rng.integers(0, 8))
                    if rng.random() < 0.6
                    else int(rng.integers(1, 256))
                )
                data[pos] ^= flip
                (p / fname).write_bytes(bytes(data))
                _expect_error(p, f"{bname}/{fname} byte {pos} ^ {flip}", failures)
                n += 1
            p = _fresh(base, tmp_path / "t")
            (p / fname).unlink()
            _expect_error(p, f"{bname}: {fname} deleted", failures)
            p = _fresh(base, tmp_path / "t")
            (p / fname).unlink()
            (p / fname).mkdir()
            _expect_error(p, f"{bname}: {fname} is a directory", failures)
            n += 2
        p = _fresh(base, tmp_path / "t")
        (p / "manifest.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
        _expect_error(p, f"{bname}: deeply nested JSON", failures)
        n += 1
    assert not failures, failures[:10]
    assert n >= 150


def _manifest_edits(m: dict) -> dict:
    """Edits of a flat_l2 manifest, each inconsistent (the checksum is redone)."""
    ent, lay = "entries", "layout"
    slots = [s for s, _ in m["metadata"]]

    def drop(*keys):
        def f(d):
            for k in keys[:-1]:
                d = d[k]
            del d[keys[-1]]

        return f

    def put(value, *keys):
        def f(d):
            for k in keys[:-1]:
                d = d[k]
            d[keys[-1]] = value

        return f

    def add(delta, *keys):
        def f(d):
            for k in keys[:-1]:
                d = d[k]
            d[keys[-1]] += delta

        return f

    edits = {f"drop {k}": drop(k) for k in m if k not in ("manifest_sha256",)}
    edits.update(
        {
            "format_version 2": put(2, "format_version"),
            "format_version 0": put(0, "format_version"),
            "format_version '1'": put("1", "format_version"),
            "format_version true": put(True, "format_version"),
            "format other": put("faiss", "format"),
            "dim 16": put(16, "dim"),
            "dim 0": put(0, "dim"),
            "dim '8'": put("8", "dim"),
            "metric bogus": put("l3", "metric"),
            "metric cosine": put("cosine", "metric"),
            "key scheme 0": put(0, "key_scheme_version"),
            "library_version int": put(1, "library_version"),
            "config extra": put(1, "config", "bogus"),
            "config missing": drop("config", "seed"),
            "config n_clusters": put(7, "config", "n_clusters"),
            "config n_probes 0": put(0, "config", "n_probes"),
            "config pq on": put(True, "config", "use_pq"),
            "config pq_subvectors str": put("4", "config", "pq_subvectors"),
            "config spill": put(1.0, "config", "spill_lambda"),
            "config list": put([1], "config"),
            "trained false": put(False, "trained"),
            "next_seq 0": put(0, "next_seq"),
            "next_seq -1": put(-1, "next_seq"),
            "next_seq huge": put(2**40, "next_seq"),
            "kmeans_iterations -1": put(-1, "kmeans_iterations"),
            "inertia str": put("1.0", "kmeans_inertia"),
            "inertia overflow": put(10**400, "kmeans_inertia"),
            "spill_lambda overflow": put(10**400, "config", "spill_lambda"),
            "inertia finite bits": put({"float64": "3ff0000000000000"}, "kmeans_inertia"),
            "state metric": put("dot_product", "state", "metric"),
            "state by_residual": put(True, "state", "by_residual"),
            "state null": put(None, "state"),
            "block_size x2": put(m[lay]["block_size"] * 2, lay, "block_size"),
            "n_blocks +8": add(8, lay, "n_blocks"),
            "width +1": add(1, lay, "width"),
            "n_used_blocks +1": add(1, lay, "n_used_blocks"),
            "n_used_blocks -1": add(-1, lay, "n_used_blocks"),
            "n_holes +1": add(1, lay, "n_holes"),
            "n_slots +1": add(1, ent, "n_slots"),
            "n_live -1": add(-1, ent, "n_live"),
            "n_wide_ids +1": add(1, ent, "n_wide_ids"),
            "spills true": put(True, ent, "spills"),
            "blob_bytes +1": add(1, "ids", "blob_bytes"),
            "ids encoding": put("pickle", "ids", "encoding"),
            "metadata not a list": put({}, "metadata"),
            "metadata slot not own": put([[10**6, {}]], "metadata"),
            "metadata slot repeated": put([[slots[0], {}], [slots[0], {}]], "metadata"),
            "metadata slot bool": put([[True, {}]], "metadata"),
            "metadata nested": put([[slots[0], {"a": {"b": 1}}]], "metadata"),
            "metadata list value": put([[slots[0], {"a": [1]}]], "metadata"),
            "metadata int overflow": put([[slots[0], {"a": 2**70}]], "metadata"),
            "metadata bad float bits": put([[slots[0], {"a": {"float64": "zz"}}]], "metadata"),
            "metadata triple": put([[slots[0], {}, 1]], "metadata"),
            "files extra": put({"x": 1, **m["files"]}, "files"),
            "files bytes": add(1, "files", "arrays.safetensors", "bytes"),
            "files sha": put("0" * 64, "files", "arrays.safetensors", "sha256"),
        }
    )
    return edits


def test_edited_manifest_with_consistent_checksum(bases, tmp_path):
    base = bases["flat_l2"]
    failures: list[str] = []
    edits = _manifest_edits(_read_manifest(base))
    for case, edit in edits.items():
        p = _fresh(base, tmp_path / "m")
        m = _read_manifest(p)
        edit(m)
        _rewrite(p, manifest=m)
        _expect_error(p, case, failures)
    # a future version names itself and the fix
    p = _fresh(base, tmp_path / "m")
    m = _read_manifest(p)
    m["format_version"] = 7
    _rewrite(p, manifest=m)
    with pytest.raises(IndexFileError, match=r"format_version.*7.*upgrade iqdb-ivf-jax"):
        load_index(p)
    # an edit without redoing the checksum
    p = _fresh(base, tmp_path / "m")
    m = _read_manifest(p)
    m["config"]["n_probes"] = 2  # valid on its own
    (p / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFileError, match="manifest_sha256"):
        load_index(p)
    assert not failures, failures[:10]
    assert len(edits) >= 60


def _array_edits(a: dict, m: dict) -> dict:
    """Edits of the arrays of a spilled PQ save, each inconsistent."""
    B, nb = m["layout"]["block_size"], m["layout"]["n_blocks"]
    n_slots, nlist = nb * B, m["config"]["n_clusters"]
    own = a["entries.own_slots"]
    twin = a["entries.slot_twin"]
    valid = a["state.valid"].reshape(-1)
    dead = int(np.flatnonzero(~valid)[0])

    def set_(name, idx, value):
        def f(d):
            d[name] = d[name].copy()
            d[name][idx] = value

        return f

    def valid_at(slot, value):
        def f(d):
            v = d["state.valid"].copy().reshape(-1)
            v[slot] = value
            d["state.valid"] = v.reshape(nb, B)

        return f

    def as_(name, dtype):
        return lambda d: d.__setitem__(name, d[name].astype(dtype))

    def short(name):
        return lambda d: d.__setitem__(name, d[name][:-1].copy())

    def drop(name):
        return lambda d: d.pop(name)

    edits = {f"drop {k}": drop(k) for k in sorted(a)}
    edits.update({f"{k} wrong dtype": as_(k, np.float64) for k in sorted(a) if k != "ids.blob"})
    edits.update({f"{k} short": short(k) for k in sorted(a) if a[k].shape[0]})
    edits.update(
        {
            "extra array": lambda d: d.__setitem__("state.extra", np.zeros(3, np.float32)),
            "own slot out of range": set_("entries.own_slots", 0, n_slots),
            "own slot negative": set_("entries.own_slots", 0, -1),
            "own slot repeated": set_("entries.own_slots", 1, own[0]),
            "own slot moved to a dead row": set_("entries.own_slots", 0, dead),
            "twin out of range": set_("entries.slot_twin", own[0], n_slots + 5),
            "twin unpaired": set_("entries.slot_twin", twin[own[0]], -1),
            "twin points at an own slot": set_("entries.slot_twin", own[0], own[1]),
            "slot_int wrong": set_("entries.slot_int", own[-1], 12345),
            "slot_seq repeated": set_("entries.slot_seq", own[1], a["entries.slot_seq"][own[0]]),
            "slot_seq past next_seq": set_("entries.slot_seq", own[0], m["next_seq"]),
            "slot_seq negative": set_("entries.slot_seq", dead, -3),
            "state seqs differ": set_("state.seqs", (own[0] // B, own[0] % B), 10**6),
            "state twin out of range": set_("state.twin", (0, 0), nlist),
            "state twin on own copy": set_("state.twin", (own[0] // B, own[0] % B), 0),
            "valid on a dead row": valid_at(dead, True),
            "valid off a live row": valid_at(int(own[0]), False),
            "valid byte 2": lambda d: d.__setitem__(
                "state.valid", np.where(d["state.valid"], 2, 0).astype(np.uint8).view(bool)
            ),
            "block_list out of range": set_("layout.block_list", 0, nlist),
            "block_list other list": set_(
                "layout.block_list", 0, (a["layout.block_list"][0] + 1) % nlist
            ),
            "list_blocks out of range": set_("layout.list_blocks", (0, 0), nb),
            "list_blocks repeated": set_(
                "layout.list_blocks", (1, 0), a["layout.list_blocks"][0, 0]
            ),
            "list_nblocks too big": set_("layout.list_nblocks", 0, m["layout"]["width"] + 1),
            "state list_nblocks differs": set_("state.list_nblocks", 0, 0),
            "block_fill over B": set_("layout.block_fill", 0, B + 1),
            "block_fill on a free block": set_("layout.block_fill", nb - 1, 1),
            "list_live +1": set_("layout.list_live", 0, a["layout.list_live"][0] + 1),
            "hole offsets not monotone": set_("layout.hole_offsets", 1, m["layout"]["n_holes"] + 1),
            "hole is live": set_("layout.holes", 0, own[0]),
            "hole out of range": set_("layout.holes", 0, n_slots),
            "ids kind 0": set_("ids.kind", 0, 0),
            "ids kind 4": set_("ids.kind", 0, 4),
            "ids int on text": set_("ids.int", int(np.flatnonzero(a["ids.kind"] != 1)[0]), 5),
            "ids duplicate": set_("ids.int", 1, a["ids.int"][0]),
            "ids offsets past blob": set_("ids.offsets", -1, a["ids.blob"].size + 1),
            "ids bad utf-8": set_("ids.blob", 0, 0xFF),
            "vectors NaN": set_("state.vectors", (0, 0, 0), np.nan),
            "vectors Inf on a dead row": set_("state.vectors", (dead // B, dead % B, 0), np.inf),
        }
    )
    return edits


def test_edited_arrays_with_consistent_checksum(bases, tmp_path):
    base = bases["spill_pq"]
    failures: list[str] = []
    edits = _array_edits(_load_arrays(base), _read_manifest(base))
    for case, edit in edits.items():
        p = _fresh(base, tmp_path / "a")
        arrays = _load_arrays(p)
        edit(arrays)
        _rewrite(p, arrays=arrays)
        _expect_error(p, case, failures)
    assert not failures, failures[:10]
    assert len(edits) >= 80


def test_random_consistent_tampering_never_escapes(bases, built, tmp_path):
    """Random bit flips inside arrays, checksums redone: a typed error, or an index
    that loads and searches."""
    rng = np.random.default_rng(99)
    failures: list[str] = []
    loaded_ok = 0
    for bname in ("flat_l2", "spill_pq"):
        base = bases[bname]
        names = sorted(n for n, x in _load_arrays(base).items() if x.size)
        for i in range(40):
            p = _fresh(base, tmp_path / "r")
            arrays = _load_arrays(p)
            name = names[int(rng.integers(len(names)))]
            raw = bytearray(arrays[name].tobytes())
            raw[int(rng.integers(len(raw)))] ^= 1 << int(rng.integers(8))
            arrays[name] = np.frombuffer(bytes(raw), arrays[name].dtype).reshape(arrays[name].shape)
            _rewrite(p, arrays=arrays)
            try:
                ix = load_index(p)
            except IndexFileError:
                continue
            except BaseException as e:  # noqa: BLE001
                failures.append(f"{bname} {i} {name}: {type(e).__name__}: {e}")
                continue
            loaded_ok += 1
            built(bname)  # searches of this shape are compiled
            fingerprint(ix)
    assert not failures, failures[:10]
    assert loaded_ok  # some flips (e.g. in a vector) leave a valid index


def test_fallback_to_old_when_interrupted_mid_swap(built, tmp_path):
    a, b = built("flat_l2"), built("pq_l2_res")
    path = tmp_path / "idx"
    save_index(a, path)
    os.rename(path, tmp_path / ".idx.old")  # as a crash between the two renames leaves it
    assert fingerprint(load_index(path)) == fingerprint(a)
    save_index(b, path)
    assert sorted(os.listdir(tmp_path)) == ["idx"]
    assert fingerprint(load_index(path)) == fingerprint(b)


# ------------------------------------------------------------------- no pickle
def test_no_pickle(built, tmp_path, monkeypatch):
    ix = built("flat_l2")
    save_index(ix, tmp_path / "idx")
    assert sorted(os.listdir(tmp_path / "idx")) == ["arrays.safetensors", "manifest.json"]

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    for mod, name in [(pickle, "loads"), (pickle, "load"), (pickle, "Unpickler"), (np, "load")]:
        monkeypatch.setattr(mod, name, refuse)
    loaded = load_index(tmp_path / "idx")
    assert_internals_equal(ix, loaded)
    assert b"import pickle" not in Path(persist.__file__).read_bytes()
