"""Spec behaviours 1-7 (docs/semantics.md §5, "Config and construction"): black-box tests."""

import dataclasses
import enum

import numpy as np
import pytest

from iqdb_ivf_jax import (
    DimensionMismatchError,
    DuplicateIdError,
    InvalidConfigError,
    InvalidFilterError,
    InvalidMetricError,
    InvalidVectorError,
    IqdbError,
    IvfConfig,
    IvfIndex,
    Metric,
    NotFoundError,
)

METRIC_NAMES = ["euclidean", "cosine", "dot_product", "manhattan", "hamming"]
DEFAULTS = {
    "n_clusters": 256,
    "n_probes": 8,
    "training_sample_size": 65536,
    "use_pq": False,
    "pq_subvectors": None,
    "pq_refine_factor": 4,
    "seed": 0xDEADBEEFCAFEF00D,
    "kmeans_max_iterations": 25,
}
BUILDERS = [
    ("with_n_clusters", "n_clusters", 64),
    ("with_n_probes", "n_probes", 3),
    ("with_training_sample_size", "training_sample_size", 1000),
    ("with_use_pq", "use_pq", True),
    ("with_pq_subvectors", "pq_subvectors", 4),
    ("with_pq_refine_factor", "pq_refine_factor", 0),
    ("with_seed", "seed", 7),
    ("with_kmeans_max_iterations", "kmeans_max_iterations", 10),
]


def _raises_naming(cfg: IvfConfig, *words: str) -> str:
    with pytest.raises(InvalidConfigError) as ei:
        cfg.validate()
    msg = str(ei.value)
    for w in words:
        assert w in msg, (w, msg)
    return msg


# --------------------------------------------------------------------------- 1
def test_b01_defaults_validate_frozen_hashable():
    cfg = IvfConfig()
    for name, value in DEFAULTS.items():
        assert getattr(cfg, name) == value, name
        assert type(getattr(cfg, name)) is type(value), name
    cfg.validate()
    # Field order is part of the API (positional order never changes; new fields after seed).
    names = [f.name for f in dataclasses.fields(IvfConfig)]
    assert names[:7] == [
        "n_clusters",
        "n_probes",
        "training_sample_size",
        "use_pq",
        "pq_subvectors",
        "pq_refine_factor",
        "seed",
    ]
    assert "kmeans_max_iterations" in names[7:]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_clusters = 3  # type: ignore[misc]
    assert cfg == IvfConfig()
    assert hash(cfg) == hash(IvfConfig())
    assert len({cfg, IvfConfig(), IvfConfig(n_clusters=3)}) == 2
    assert IvfConfig(n_clusters=3) != cfg


def test_b01_positional_construction_order():
    cfg = IvfConfig(16, 2, 1000, True, 4, 0, 5)
    assert (cfg.n_clusters, cfg.n_probes, cfg.training_sample_size) == (16, 2, 1000)
    assert (cfg.use_pq, cfg.pq_subvectors, cfg.pq_refine_factor, cfg.seed) == (True, 4, 0, 5)
    assert cfg.kmeans_max_iterations == 25


@pytest.mark.parametrize("builder,field,value", BUILDERS)
def test_b01_each_builder_changes_one_field(builder, field, value):
    base = IvfConfig()
    new = getattr(base, builder)(value)
    assert isinstance(new, IvfConfig)
    assert new is not base
    assert base == IvfConfig(), "builders must not mutate"
    before, after = dataclasses.asdict(base), dataclasses.asdict(new)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {field}
    assert getattr(new, field) == value


def test_b01_builders_chain():
    cfg = (
        IvfConfig()
        .with_n_clusters(32)
        .with_n_probes(4)
        .with_training_sample_size(4096)
        .with_use_pq(True)
        .with_pq_subvectors(8)
        .with_pq_refine_factor(2)
        .with_seed(99)
        .with_kmeans_max_iterations(7)
    )
    assert cfg == IvfConfig(32, 4, 4096, True, 8, 2, 99, 7)
    cfg.validate()
    assert (
        IvfConfig().with_use_pq(True).with_pq_subvectors(8).with_pq_subvectors(None).pq_subvectors
        is None
    )


# --------------------------------------------------------------------------- 2
def test_b02_building_never_raises():
    # Construction of absurd values is fine; only validate() checks.
    IvfConfig(n_clusters=-5, n_probes="x", seed=2**70, use_pq=True)  # type: ignore[arg-type]
    IvfConfig(n_clusters=True, training_sample_size=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"n_clusters": 0}, ["n_clusters"]),
        ({"n_clusters": -1}, ["n_clusters"]),
        ({"n_probes": 0}, ["n_probes"]),
        ({"n_probes": -3}, ["n_probes"]),
        ({"n_clusters": 4, "n_probes": 5}, ["n_probes", "n_clusters"]),
        ({"training_sample_size": 0}, ["training_sample_size"]),
        ({"training_sample_size": -1}, ["training_sample_size"]),
        ({"n_clusters": 300, "training_sample_size": 299}, ["training_sample_size"]),
        (
            {"use_pq": True, "pq_subvectors": 4, "n_clusters": 16, "training_sample_size": 255},
            ["training_sample_size", "256"],
        ),
        ({"pq_refine_factor": -1}, ["pq_refine_factor"]),
        ({"seed": -1}, ["seed"]),
        ({"seed": 2**64}, ["seed"]),
        ({"seed": 2**80}, ["seed"]),
        # bools and other non-ints are rejected for int fields
        ({"n_clusters": True}, ["n_clusters"]),
        ({"n_probes": True, "n_clusters": 4}, ["n_probes"]),
        ({"training_sample_size": True, "n_clusters": 1, "n_probes": 1}, ["training_sample_size"]),
        ({"pq_refine_factor": False}, ["pq_refine_factor"]),
        ({"seed": True}, ["seed"]),
        ({"n_clusters": 4.0}, ["n_clusters"]),
        ({"n_probes": "2"}, ["n_probes"]),
        ({"seed": 1.0}, ["seed"]),
        ({"use_pq": True, "pq_subvectors": True, "n_clusters": 16}, ["pq_subvectors"]),
        ({"use_pq": True, "pq_subvectors": 2.0, "n_clusters": 16}, ["pq_subvectors"]),
    ],
)
def test_b02_errors_name_the_field(kwargs, words):
    _raises_naming(IvfConfig(**kwargs), *words)


def test_b02_boundaries_validate():
    IvfConfig(n_clusters=1, n_probes=1, training_sample_size=1).validate()
    IvfConfig(n_clusters=4, n_probes=4, training_sample_size=4).validate()
    IvfConfig(seed=0).validate()
    IvfConfig(seed=2**64 - 1).validate()
    IvfConfig(seed=2**63).validate()
    IvfConfig(pq_refine_factor=0).validate()
    IvfConfig(
        use_pq=True, pq_subvectors=2, n_clusters=4, n_probes=4, training_sample_size=256
    ).validate()
    # numpy ints are not Python ints, but seeds up to 2**64-1 are plain ints: fine.


def test_b02_check_order():
    # n_clusters is checked before n_probes, which is checked before training_sample_size.
    _raises_naming(IvfConfig(n_clusters=0, n_probes=0, training_sample_size=0), "n_clusters")
    _raises_naming(IvfConfig(n_probes=0, training_sample_size=0), "n_probes")
    _raises_naming(IvfConfig(n_clusters=2, n_probes=3, training_sample_size=0), "n_probes")
    _raises_naming(IvfConfig(training_sample_size=0, seed=-1), "training_sample_size")
    # pq_subvectors is checked before refine and seed
    _raises_naming(
        IvfConfig(use_pq=True, pq_subvectors=None, pq_refine_factor=-1, seed=-1), "pq_subvectors"
    )
    # refine before seed
    _raises_naming(IvfConfig(pq_refine_factor=-1, seed=-1), "pq_refine_factor")


# --------------------------------------------------------------------------- 3
def test_b03_pq_subvectors_rules():
    _raises_naming(IvfConfig(use_pq=True), "pq_subvectors", "None")
    _raises_naming(IvfConfig(use_pq=True, pq_subvectors=0), ">= 1")
    _raises_naming(IvfConfig(use_pq=True, pq_subvectors=-2), ">= 1")
    IvfConfig(use_pq=True, pq_subvectors=8).validate()  # validates with no dim
    IvfConfig().with_use_pq(True).with_pq_subvectors(8).validate()
    # pq_subvectors is ignored without use_pq
    IvfConfig(pq_subvectors=0).validate()
    IvfConfig(pq_subvectors=-1).validate()
    IvfConfig(pq_subvectors=3).validate()


# --------------------------------------------------------------------------- 4
@pytest.mark.parametrize("dim", [0, -1])
def test_b04_bad_dim_names_dim(dim):
    with pytest.raises(InvalidConfigError, match="dim"):
        IvfIndex(dim, "euclidean")


def test_b04_dim_checked_first():
    with pytest.raises(InvalidConfigError, match="dim"):
        IvfIndex(0, "l2", IvfConfig(n_clusters=0))
    # metric parses before validate()
    with pytest.raises(InvalidMetricError):
        IvfIndex(4, "l2", IvfConfig(n_clusters=0))
    # validate() before the PQ-metric check
    with pytest.raises(InvalidConfigError, match="n_clusters"):
        IvfIndex(6, "cosine", IvfConfig(n_clusters=0, use_pq=True, pq_subvectors=4))


def test_b04_pq_divide():
    cfg = IvfConfig(n_clusters=4, n_probes=2, use_pq=True, pq_subvectors=4)
    with pytest.raises(InvalidConfigError, match="divide"):
        IvfIndex(6, "euclidean", cfg)
    IvfIndex(8, "euclidean", cfg)  # 4 divides 8
    # pq_subvectors is ignored without use_pq
    IvfIndex(6, "euclidean", IvfConfig(pq_subvectors=4))


@pytest.mark.parametrize("metric", ["cosine", "hamming", Metric.COSINE, Metric.HAMMING])
@pytest.mark.parametrize("dim", [8, 6])
def test_b04_pq_cosine_hamming_rejected(metric, dim):
    cfg = IvfConfig(n_clusters=4, n_probes=2, use_pq=True, pq_subvectors=4)
    with pytest.raises(InvalidMetricError):
        IvfIndex(dim, metric, cfg)


@pytest.mark.parametrize("metric", ["euclidean", "dot_product", "manhattan"])
def test_b04_pq_supported_metrics_construct(metric):
    idx = IvfIndex(8, metric, IvfConfig(n_clusters=4, n_probes=2, use_pq=True, pq_subvectors=4))
    assert idx.metric is Metric(metric)
    assert not idx.is_trained


def test_b04_default_config():
    idx = IvfIndex(4, "euclidean")
    assert idx.config == IvfConfig()
    idx2 = IvfIndex(4, "euclidean", None)
    assert idx2.config == IvfConfig()
    assert idx.dim == 4


# --------------------------------------------------------------------------- 5
def test_b05_metric_enum():
    assert issubclass(Metric, enum.Enum)
    assert [m.name for m in Metric] == [
        "EUCLIDEAN",
        "COSINE",
        "DOT_PRODUCT",
        "MANHATTAN",
        "HAMMING",
    ]
    for m in Metric:
        assert m.value == m.name.lower()


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_b05_metric_strings_accepted(name):
    idx = IvfIndex(4, name, IvfConfig(n_clusters=2, n_probes=1))
    assert idx.metric is Metric(name)
    assert IvfIndex(4, Metric(name), IvfConfig(n_clusters=2, n_probes=1)).metric is Metric(name)


@pytest.mark.parametrize("bad", ["Euclidean", "l2", "EUCLIDEAN", "", "cos", "dot"])
def test_b05_bad_metric_strings(bad):
    with pytest.raises(InvalidMetricError) as ei:
        IvfIndex(4, bad)
    msg = str(ei.value)
    for name in METRIC_NAMES:
        assert name in msg, "the error must list the valid names"
    assert isinstance(ei.value, ValueError)


# --------------------------------------------------------------------------- 6
def test_b06_refine_round_trip_untrained():
    cfg = IvfConfig(n_clusters=4, n_probes=2, use_pq=True, pq_subvectors=2)
    idx = IvfIndex(8, "euclidean", cfg)
    assert idx.pq_refine_factor == 4
    idx.set_pq_refine_factor(0)
    assert idx.pq_refine_factor == 0
    assert idx.config.pq_refine_factor == 0
    idx.set_pq_refine_factor(8)
    assert idx.pq_refine_factor == 8
    assert idx.config.pq_refine_factor == 8
    assert not idx.is_trained
    with pytest.raises(InvalidConfigError):
        idx.set_pq_refine_factor(-1)
    assert idx.pq_refine_factor == 8


def test_b06_refine_setter_flat_mode():
    idx = IvfIndex(4, "euclidean", IvfConfig(n_clusters=4, n_probes=2))
    idx.set_pq_refine_factor(0)
    assert idx.pq_refine_factor == 0
    idx.set_pq_refine_factor(8)
    assert idx.config.pq_refine_factor == 8


def test_b06_set_n_probes_untrained():
    idx = IvfIndex(4, "euclidean", IvfConfig(n_clusters=5, n_probes=2))
    assert idx.n_probes == 2
    with pytest.raises(InvalidConfigError, match="n >= 1"):
        idx.set_n_probes(0)
    with pytest.raises(InvalidConfigError, match="n >= 1"):
        idx.set_n_probes(-4)
    with pytest.raises(InvalidConfigError, match="n_clusters"):
        idx.set_n_probes(6)
    assert idx.n_probes == 2
    idx.set_n_probes(5)
    assert idx.n_probes == 5
    assert idx.config.n_probes == 5
    idx.set_n_probes(1)
    assert idx.n_probes == 1
    assert idx.config == IvfConfig(n_clusters=5, n_probes=1)
    with pytest.raises(TypeError):
        idx.set_n_probes(True)


# --------------------------------------------------------------------------- 7
@pytest.mark.parametrize(
    "cls,builtin",
    [
        (InvalidConfigError, ValueError),
        (InvalidVectorError, ValueError),
        (InvalidMetricError, ValueError),
        (InvalidFilterError, ValueError),
        (DimensionMismatchError, ValueError),
        (DuplicateIdError, KeyError),
        (NotFoundError, KeyError),
    ],
)
def test_b07_error_hierarchy(cls, builtin):
    assert issubclass(cls, IqdbError)
    assert issubclass(cls, builtin)
    assert issubclass(IqdbError, Exception)


def test_b07_dimension_mismatch_attrs():
    e = DimensionMismatchError(3, 5)
    assert (e.expected, e.found) == (3, 5)
    assert str(e) == "vector dimension mismatch: expected 3, found 5"


def test_b07_errors_from_index():
    idx = IvfIndex(2, "euclidean", IvfConfig(n_clusters=1, n_probes=1))
    with pytest.raises(InvalidConfigError) as ei:
        idx.insert(1, [0.0, 0.0])
    assert "train" in str(ei.value)  # names the fix
    idx.train(np.array([[0.0, 0.0], [1.0, 1.0]], np.float32))
    with pytest.raises(DimensionMismatchError) as ei:
        idx.insert(1, [0.0, 0.0, 0.0])
    assert (ei.value.expected, ei.value.found) == (2, 3)
    assert str(ei.value) == "vector dimension mismatch: expected 2, found 3"

    idx.insert("abc", [0.0, 1.0])
    with pytest.raises(DuplicateIdError) as ei:
        idx.insert("abc", [1.0, 1.0])
    assert ei.value.id == "abc"
    assert isinstance(ei.value, KeyError)
    s = str(ei.value)
    assert s and s[0] not in "'\"" and s[-1] not in "'\"", s

    with pytest.raises(NotFoundError) as ei:
        idx.delete(12345)
    assert ei.value.id == 12345
    s = str(ei.value)
    assert s and s[0] not in "'\"" and s[-1] not in "'\"", s
    assert "12345" in s

    with pytest.raises(NotFoundError) as ei:
        idx.get(b"zz")
    assert ei.value.id == b"zz"
    # `except KeyError` works
    try:
        idx.get("nope")
    except KeyError as e:
        assert isinstance(e, IqdbError)
    else:  # pragma: no cover
        pytest.fail("get of an absent id must raise")


def test_kmeans_init_field_builder_and_validation():
    from iqdb_ivf_jax import InvalidConfigError, IvfConfig

    cfg = IvfConfig()
    assert cfg.kmeans_init == "kmeans++"
    assert cfg.with_kmeans_init("random").kmeans_init == "random"
    with pytest.raises(InvalidConfigError, match="kmeans_init"):
        cfg.with_kmeans_init("bogus").validate()


def test_pq_by_residual_field_builder_and_validation():
    from iqdb_ivf_jax import InvalidConfigError, IvfConfig

    cfg = IvfConfig()
    assert cfg.pq_by_residual is False
    assert cfg.with_pq_by_residual(True).pq_by_residual is True
    with pytest.raises(InvalidConfigError, match="pq_by_residual"):
        cfg.with_pq_by_residual(1).validate()
