"""`IvfState`: the immutable pytree of device arrays behind an index.

Storage is a pool of fixed-size *blocks* of ``B`` rows. Each inverted list owns
a few blocks (``list_blocks[l, :list_nblocks[l]]``); a search scans only the
blocks of the lists it probes, so the padding it reads is at most ``B - 1``
rows per probed list (plus tombstones), whatever the spread of list sizes.
Slot ``s`` is row ``s % B`` of block ``s // B``; ``IvfIndex`` maps slots back
to ids.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ._assign import centroid_sq_norms
from ._config import Metric
from ._errors import InvalidConfigError


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class IvfState:
    """Device arrays of an IVF index (a pytree; ``metric`` is static).

    Attributes:
        centroids: ``f32[nlist, d]`` coarse centroids.
        vectors: ``f32[n_blocks, B, d]`` raw vectors (zeros where empty).
        norms: ``f32[n_blocks, B]`` their L2 norms (COSINE: bit-exact
            :func:`_metrics.row_norms`; see :func:`_insert.stored_norms`);
            ``[n_blocks, 0]`` for codes-only IVF-PQ, whose searches never read
            them (an mmap-loaded index keeps them: its refine does).
        codes: ``u8[n_blocks, B, M]`` PQ codes (``M == 0`` for IVF-Flat).
        pq_terms: ``f32[n_blocks, B]`` residual EUCLIDEAN IVF-PQ only (``[n_blocks, 0]``
            otherwise): each row's ``|r|^2 + 2 c . r`` (decoded residual ``r``,
            list centroid ``c``), the per-row part of faiss's precomputed-table
            ADC (see :func:`_pq.residual_terms`).
        codebooks: ``f32[M, 256, d // M]`` PQ codebooks (``M == 0`` for IVF-Flat).
        seqs: ``i32[n_blocks, B]`` insertion sequence numbers (tie-break key).
        valid: ``bool[n_blocks, B]`` live rows.
        twin: ``i32[n_blocks, B]`` with spilled assignment only (``[n_blocks, 0]``
            otherwise): for a vector's spilled copy, the list holding the vector's
            own copy (a query that probes that list skips the spilled one);
            ``-1`` for own copies and empty rows.
        list_blocks: ``i32[nlist, W]`` blocks of each list, ``-1`` padded.
        list_nblocks: ``i32[nlist]`` blocks in use per list.
        centroid_sq: ``f32[nlist]`` squared centroid norms
            (:func:`_assign.centroid_sq_norms`), kept so that probing and
            assignment share one copy; ``replace(centroids=...)`` recomputes it.
        metric: the index :class:`Metric`.
        by_residual: static; PQ codes encode ``x - centroids[list]``.
        interleave: static; ``1``: block ``b`` is stored at row-array position
            ``b``. ``I > 1`` (a state split over ``I`` devices): at
            :func:`storage_blocks` ``(b % I) * (n_blocks / I) + b // I``, so
            consecutive blocks (a list's, as the layout hands them out) land
            on different devices. Block ids everywhere else (tables, slots,
            the layout) are the logical ``b``.
    """

    centroids: jax.Array
    vectors: jax.Array
    norms: jax.Array
    codes: jax.Array
    pq_terms: jax.Array
    codebooks: jax.Array
    seqs: jax.Array
    valid: jax.Array
    twin: jax.Array
    list_blocks: jax.Array
    list_nblocks: jax.Array
    centroid_sq: jax.Array
    metric: Metric = dataclasses.field(metadata={"static": True})
    by_residual: bool = dataclasses.field(default=False, metadata={"static": True})
    interleave: int = dataclasses.field(default=1, metadata={"static": True})

    @property
    def n_lists(self) -> int:
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @property
    def block_size(self) -> int:
        return self.vectors.shape[1]

    @property
    def n_blocks(self) -> int:
        return self.vectors.shape[0]

    @property
    def table_width(self) -> int:
        return self.list_blocks.shape[1]

    @property
    def keeps_vectors(self) -> bool:
        """Whether raw vectors are stored (False only for codes-only IVF-PQ)."""
        return self.vectors.shape[2] > 0

    @property
    def keeps_norms(self) -> bool:
        """Whether ``norms`` holds a norm per row (not for codes-only IVF-PQ)."""
        return self.norms.shape[1] > 0

    @property
    def is_pq(self) -> bool:
        return self.codebooks.shape[0] > 0

    @property
    def spills(self) -> bool:
        """Whether vectors have spilled copies (``twin`` holds a value per row)."""
        return self.twin.shape[1] > 0

    @property
    def keeps_pq_terms(self) -> bool:
        """Whether ``pq_terms`` holds a term per row (residual EUCLIDEAN IVF-PQ)."""
        return self.pq_terms.shape[1] > 0

    def replace(self, **changes) -> "IvfState":
        if "centroids" in changes and "centroid_sq" not in changes:
            changes["centroid_sq"] = centroid_sq_norms(changes["centroids"])
        return dataclasses.replace(self, **changes)

    @classmethod
    def create(
        cls,
        centroids,
        *,
        metric: Metric,
        codebooks=None,
        by_residual: bool = False,
        block_size: int = 32,
        n_blocks: int = 8,
        table_width: int = 1,
        spill: bool = False,
        keep_vectors: bool = True,
    ) -> "IvfState":
        """An empty state with the given capacity (``spill``: keep ``twin``;
        ``keep_vectors=False``: codes-only IVF-PQ, ``vectors`` is ``[n_blocks, B, 0]``
        and ``norms`` ``[n_blocks, 0]``).

        Raises:
            InvalidConfigError: for inconsistent shapes or sizes.
        """
        centroids = jnp.asarray(centroids, jnp.float32)
        if centroids.ndim != 2 or centroids.shape[0] < 1 or centroids.shape[1] < 1:
            raise InvalidConfigError(f"centroids must be (nlist, d), got {centroids.shape}")
        nlist, d = centroids.shape
        if codebooks is None:
            codebooks = jnp.zeros((0, 256, 0), jnp.float32)
        codebooks = jnp.asarray(codebooks, jnp.float32)
        m = codebooks.shape[0]
        if codebooks.ndim != 3 or (
            m and (codebooks.shape[1] != 256 or m * codebooks.shape[2] != d)
        ):
            raise InvalidConfigError(f"codebooks must be (M, 256, d // M), got {codebooks.shape}")
        for name, v in (
            ("block_size", block_size),
            ("n_blocks", n_blocks),
            ("table_width", table_width),
        ):
            if v < 1:
                raise InvalidConfigError(f"{name} must be >= 1, got {v}")
        by_residual = bool(by_residual) and m > 0
        term_width = block_size if by_residual and metric is Metric.EUCLIDEAN else 0
        return cls(
            centroids=centroids,
            codebooks=codebooks,
            centroid_sq=centroid_sq_norms(centroids),
            metric=metric,
            by_residual=by_residual,
            **_empty_rows(
                n_blocks,
                block_size,
                d if keep_vectors else 0,
                block_size if keep_vectors else 0,
                m,
                term_width,
                block_size if spill else 0,
                nlist,
                table_width,
            ),
        )

    def grown(self, n_blocks: int) -> "IvfState":
        """A copy whose row arrays hold at least ``n_blocks`` blocks. The block
        table is left as it is: every caller installs the layout's own next
        (:func:`~._insert.table_arrays`)."""
        add_b = max(0, n_blocks - self.n_blocks)
        if not add_b:
            return self
        if self.interleave > 1:  # the storage order depends on the pool size
            return self.replace(**_regrown_rows(self, add_b=add_b))
        return self.replace(**_padded_rows(self, add_b=add_b))

    def interleaved(self, n: int) -> "IvfState":
        """This state with its row arrays in the storage order of interleave
        ``n`` (``1``: block order). Raises InvalidConfigError if ``n`` does
        not divide the pool."""
        if n == self.interleave:
            return self
        if self.n_blocks % n:
            raise InvalidConfigError(
                f"the pool's {self.n_blocks} blocks do not split over {n} devices; "
                "use at most 8 devices for a small index"
            )
        rows = {name: getattr(self, name) for name in ROW_FIELDS}
        if self.interleave > 1:
            rows = _to_storage(rows, inverse=True, n=self.interleave)
        if n > 1:
            rows = _to_storage(rows, inverse=False, n=n)
        return dataclasses.replace(self, **rows, interleave=n)

    def quantizers(self) -> "IvfState":
        """This state with empty rows and tables: the centroids, codebooks and
        static flags (``keeps_pq_terms`` included) that assignment and encoding
        read. A jitted function of it compiles once per quantizer, not again
        at every pool growth, table widening or re-blocking (the row axis is
        0 and the block axis at most 1, so ``block_size`` is not the state's).
        The empty arrays are host arrays (no device work)."""
        empty = {}
        for name in ROW_FIELDS:
            a = getattr(self, name)
            empty[name] = np.zeros((0, min(a.shape[1], 1)) + a.shape[2:], a.dtype)
        return self.replace(**empty, list_blocks=np.zeros((0, 0), np.int32))

    def nbytes_by_field(self) -> dict[str, int]:
        """Bytes held by each array field."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (jax.Array, np.ndarray)):
                out[f.name] = int(v.size * v.dtype.itemsize)
        return out


ROW_FIELDS = ("vectors", "norms", "codes", "pq_terms", "seqs", "valid", "twin")
_FILL = {"twin": -1, "valid": False}  # empty rows; the rest 0 (list_blocks -1)


@functools.partial(jax.jit, static_argnums=tuple(range(9)))
def _empty_rows(
    nb: int, B: int, d: int, norms: int, m: int, terms: int, twin: int, nlist: int, W: int
):
    """The row and table arrays of an empty state, in one program (not one per
    array: each eager ``jnp.zeros`` compiles its own)."""
    return {
        "vectors": jnp.zeros((nb, B, d), jnp.float32),
        "norms": jnp.zeros((nb, norms), jnp.float32),
        "codes": jnp.zeros((nb, B, m), jnp.uint8),
        "pq_terms": jnp.zeros((nb, terms), jnp.float32),
        "seqs": jnp.zeros((nb, B), jnp.int32),
        "valid": jnp.zeros((nb, B), bool),
        "twin": jnp.full((nb, twin), -1, jnp.int32),
        "list_blocks": jnp.full((nlist, W), -1, jnp.int32),
        "list_nblocks": jnp.zeros((nlist,), jnp.int32),
    }


def storage_blocks(blocks, n_blocks: int, interleave: int):
    """Row-array positions of logical ``blocks`` (NumPy or jax integer
    arrays) in a pool of ``n_blocks`` stored with ``interleave`` (see
    :class:`IvfState`); out-of-range ids stay out of range."""
    if interleave == 1:
        return blocks
    per = n_blocks // interleave
    return (blocks % interleave) * per + blocks // interleave


def logical_order(a, interleave: int):
    """A row array (NumPy, or jax under tracing) stored with ``interleave``,
    back in block order."""
    if interleave == 1:
        return a
    per = a.shape[0] // interleave
    return a.reshape((interleave, per) + a.shape[1:]).swapaxes(0, 1).reshape(a.shape)


def storage_order(a, interleave: int):
    """A row array (NumPy, or jax under tracing) in block order, stored with
    ``interleave``."""
    if interleave == 1:
        return a
    per = a.shape[0] // interleave
    return a.reshape((per, interleave) + a.shape[1:]).swapaxes(0, 1).reshape(a.shape)


@functools.partial(jax.jit, static_argnames=("inverse", "n"))
def _to_storage(rows: dict, *, inverse: bool, n: int) -> dict:
    """Row arrays from block order to the storage order of interleave ``n``
    (``inverse``: back), in one program."""
    move = logical_order if inverse else storage_order
    return {k: move(v, n) for k, v in rows.items()}


@functools.partial(jax.jit, static_argnames=("add_b",))
def _regrown_rows(state: IvfState, *, add_b: int) -> dict:
    """:func:`_padded_rows` of an interleaved state: back to block order, pad,
    and into the storage order of the larger pool, in one program."""
    n = state.interleave
    rows = _to_storage({k: getattr(state, k) for k in ROW_FIELDS}, inverse=True, n=n)
    padded = _padded_rows(dataclasses.replace(state, **rows, interleave=1), add_b=add_b)
    return _to_storage(padded, inverse=False, n=n)


@functools.partial(jax.jit, static_argnames=("add_b",))
def _padded_rows(state: IvfState, *, add_b: int) -> dict:
    """``add_b`` empty blocks appended to every row array, in one program."""
    return {
        name: jnp.pad(
            getattr(state, name),
            [(0, add_b)] + [(0, 0)] * (getattr(state, name).ndim - 1),
            constant_values=_FILL.get(name, 0),
        )
        for name in ROW_FIELDS
    }
