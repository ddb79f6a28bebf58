"""`DeviceMesh`: how an index spreads its rows over several devices.

A sharded index keeps ONE state whose row arrays (``IvfState`` fields with a
leading block axis) are split over the devices of a one-axis mesh along that
axis, stored interleaved (:attr:`IvfState.interleave`): block ``b`` lives on
device ``b % devices``, so the consecutive blocks of a list (and the rows and
the scan work) spread over every device. Centroids, codebooks and the block
table are replicated. Host bookkeeping (ids, layout, seqs) is unchanged, so every write
path of :class:`IvfIndex` works on the sharded arrays as it does on one device,
and a search runs once per device on its own blocks (:mod:`._search.sharded`).
"""

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ._errors import InvalidArgumentError, InvalidConfigError
from ._layout import width_bucket
from ._state import ROW_FIELDS, IvfState

AXIS = "shards"  # the mesh axis of a mesh built from a device list


@dataclasses.dataclass(frozen=True)
class DeviceMesh:
    """A one-axis :class:`jax.sharding.Mesh` whose axis ``axis`` splits the pool.

    Attributes:
        mesh: the mesh (its devices in shard order).
        axis: the name of its one axis.
    """

    mesh: Mesh
    axis: str

    @classmethod
    def parse(cls, devices) -> "DeviceMesh | None":
        """``devices`` (None, a sequence of :class:`jax.Device`, or a one-axis
        :class:`~jax.sharding.Mesh`) as a mesh; None stays None (one device,
        the default path).

        Raises:
            InvalidArgumentError: not a sequence of devices or a Mesh; a device
                repeated; devices of different platforms; a Mesh of several axes.
            InvalidConfigError: no devices, or a count that is not a power of two.
        """
        if devices is None:
            return None
        if isinstance(devices, Mesh):
            if len(devices.axis_names) != 1:
                raise InvalidArgumentError(
                    f"a Mesh for an index must have one axis, got {devices.axis_names}; "
                    "pass Mesh(np.array(devices), ('shards',)) or the device list itself"
                )
            mesh, axis = devices, str(devices.axis_names[0])
            devs = list(mesh.devices.reshape(-1))
        else:
            if isinstance(devices, (str, bytes)) or not hasattr(devices, "__iter__"):
                raise InvalidArgumentError(
                    f"devices must be a sequence of jax.Device or a Mesh, got "
                    f"{type(devices).__name__}; pass e.g. devices=jax.devices()"
                )
            devs = list(devices)
            bad = [d for d in devs if not isinstance(d, jax.Device)]
            if bad:
                raise InvalidArgumentError(
                    f"devices must hold jax.Device objects, got {type(bad[0]).__name__}; "
                    "pass e.g. devices=jax.devices()"
                )
            mesh, axis = None, AXIS
        if not devs:
            raise InvalidConfigError("devices is empty; pass at least one jax.Device")
        if len({d.id for d in devs}) != len(devs):
            raise InvalidArgumentError("devices repeats a device; pass each device once")
        if len({d.platform for d in devs}) != 1:
            raise InvalidArgumentError(
                f"devices mixes platforms {sorted({d.platform for d in devs})}; "
                "pass devices of one platform"
            )
        n = len(devs)
        if n & (n - 1):
            raise InvalidConfigError(
                f"an index spreads over a power-of-two number of devices, got {n}; "
                f"pass {1 << (n.bit_length() - 1)} of them"
            )
        if mesh is None:
            mesh = Mesh(np.array(devs, dtype=object), (axis,))
        return cls(mesh, axis)

    @property
    def size(self) -> int:
        """Number of devices."""
        return int(self.mesh.devices.size)

    @property
    def devices(self) -> list:
        return list(self.mesh.devices.reshape(-1))

    def rows(self) -> NamedSharding:
        """Sharding of a row array: split along its block axis."""
        return NamedSharding(self.mesh, P(self.axis))

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    @property
    def spans_processes(self) -> bool:
        """Whether some of the devices belong to other processes (multi-host)."""
        return any(d.process_index != jax.process_index() for d in self.devices)

    def put(self, x, sharding: NamedSharding):
        """``x`` (a host or device array) placed with ``sharding``. Across
        processes a device array goes through the host: every process puts
        its own shards of the same value (device-to-device copies between
        hosts need a transfer service that CPU backends lack)."""
        if isinstance(x, jax.Array):
            if x.sharding == sharding:
                return x
            if self.spans_processes:
                x = np.asarray(x)
        return jax.device_put(x, sharding)

    def place(self, state: IvfState) -> IvfState:
        """``state`` with its row arrays in the storage order of interleave
        ``size`` (:attr:`IvfState.interleave`: consecutive blocks on
        consecutive devices), split over the mesh, and the rest replicated
        (arrays already placed so are not copied).

        Raises:
            InvalidConfigError: the pool's block count is not a multiple of the
                device count (:meth:`IvfState.interleaved`; pools are powers of
                two of at least 8 blocks, so only past 8 devices on a small pool).
        """
        state = state.interleaved(self.size)
        rows, rep = self.rows(), self.replicated()
        changes = {}
        for f in dataclasses.fields(state):
            v = getattr(state, f.name)
            if isinstance(v, (jax.Array, np.ndarray)):
                want = rows if f.name in ROW_FIELDS else rep
                if not (isinstance(v, jax.Array) and v.sharding == want):
                    changes[f.name] = self.put(v, want)
        return dataclasses.replace(state, **changes) if changes else state

    def specs(self, state: IvfState) -> IvfState:
        """The ``shard_map`` partition specs of ``state`` (a pytree like it)."""
        changes = {
            f.name: (P(self.axis) if f.name in ROW_FIELDS else P())
            for f in dataclasses.fields(state)
            if isinstance(getattr(state, f.name), (jax.Array, np.ndarray))
        }
        return dataclasses.replace(state, **changes)


def host_array(a) -> np.ndarray:
    """The value of a host or device array as a NumPy array. An array split
    over the devices of several processes is gathered from all of them: a
    collective, so every process must make the same call (as every process of
    a multi-host index makes the same index calls)."""
    if isinstance(a, jax.Array) and not (a.is_fully_addressable or a.is_fully_replicated):
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)


def local_tables(
    list_blocks: np.ndarray, list_nblocks: np.ndarray, n_dev: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each device's own block table, from the global one, for a state stored
    with interleave ``n_dev`` (block ``b`` on device ``b % n_dev``, local
    block ``b // n_dev``).

    Args:
        list_blocks: ``int32[n_lists, W]`` block ids, ``-1`` padded.
        list_nblocks: ``int32[n_lists]`` blocks per list.
        n_dev: device count.

    Returns:
        ``(tables int32[n_dev, n_lists, Wl], counts int32[n_dev, n_lists])``:
        the blocks of each list that device ``i`` holds, as ids local to it,
        in table order, ``-1`` padded; ``Wl`` is :func:`width_bucket` of the
        largest count.
    """
    n_lists, width = list_blocks.shape
    used = np.arange(width)[None, :] < list_nblocks[:, None]
    dev = np.where(used, list_blocks % n_dev, -1)
    counts = np.stack([(dev == i).sum(axis=1) for i in range(n_dev)]).astype(np.int32)
    wl = width_bucket(int(counts.max()) if counts.size else 1)
    tables = np.full((n_dev, n_lists, wl), -1, np.int32)
    for i in range(n_dev):
        mine = dev == i
        order = np.argsort(~mine, axis=1, kind="stable")[:, :wl]
        vals = np.take_along_axis(list_blocks, order, axis=1) // n_dev
        keep = np.arange(wl)[None, :] < counts[i][:, None]
        tables[i] = np.where(keep, vals, -1)
    return tables, counts
