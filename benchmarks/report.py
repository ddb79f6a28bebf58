"""Ratios at equal recall, the printed tables, the JSON file and the plot."""

import json
import math
from pathlib import Path

import numpy as np

from .measure import at_recall
from .methods import FAMILIES, PQ_ADC


def auto_target(points: list[dict], family: str) -> list[float]:
    """For ``--targets-adc auto``: the largest multiple of 0.05 that both
    implementations of ``family`` reach (PQ without refine tops out well below
    the Flat targets, and where depends on M and the data)."""
    best = []
    for impl in ("ours", "faiss"):
        rec = [p["recall"] for p in points if p["family"] == family and p["impl"] == impl]
        if not rec:
            return []
        best.append(max(rec))
    t = math.floor(min(best) * 20 + 1e-9) / 20
    return [t] if t > 0 else []


def _ratio(ours, faiss):
    if ours is None or faiss is None or faiss == 0:
        return None
    return ours / faiss


def compute_ratios(points: list[dict], builds: dict, targets: dict, k: int) -> list[dict]:
    """Rows of ours/faiss ratios: per family, speed at each target recall, then build.

    ``targets`` maps a family to its list of recall targets. ``builds`` maps a
    method name to its build record. Each row has ``ours``, ``faiss``, ``ratio``
    (ours / faiss) and ``better`` (``"higher"`` or ``"lower"``: which way a
    ratio favours ours).
    """
    rows = []
    for fam in FAMILIES:
        ours = [p for p in points if p["family"] == fam and p["impl"] == "ours"]
        theirs = [p for p in points if p["family"] == fam and p["impl"] == "faiss"]
        if not ours or not theirs:
            continue
        for target in targets.get(fam, []):
            for key, what, better in (
                ("batch_qps", "batch QPS", "higher"),
                ("latency_p50_ms", "p50 latency ms", "lower"),
                ("latency_p99_ms", "p99 latency ms", "lower"),
            ):
                a, b = at_recall(ours, target, key), at_recall(theirs, target, key)
                va, vb = (a or {}).get("value"), (b or {}).get("value")
                rows.append(
                    {
                        "family": fam,
                        "what": what,
                        "at": f"recall@{k}={target:.2f}",
                        "target": target,
                        "ours": va,
                        "faiss": vb,
                        "ratio": _ratio(va, vb),
                        "better": better,
                        "ours_bracket": a,
                        "faiss_bracket": b,
                    }
                )
        bo = builds[ours[0]["method"]]
        bf = builds[theirs[0]["method"]]
        if fam != PQ_ADC:  # the ADC methods share the PQ+refine builds
            rows.append(
                {
                    "family": fam,
                    "what": "train+add s",
                    "at": "cold (incl. compile)",
                    "ours": bo["cold"]["total_s"],
                    "faiss": bf["cold"]["total_s"],
                    "ratio": _ratio(bo["cold"]["total_s"], bf["cold"]["total_s"]),
                    "better": "lower",
                }
            )
            if "warm" in bo:
                rows.append(
                    {
                        "family": fam,
                        "what": "train+add s",
                        "at": "warm (2nd build)",
                        "ours": bo["warm"]["total_s"],
                        "faiss": bf["cold"]["total_s"],
                        "ratio": _ratio(bo["warm"]["total_s"], bf["cold"]["total_s"]),
                        "better": "lower",
                    }
                )
        fb = (
            bf.get("bytes_per_vector_ivfpq_only", bf["bytes_per_vector"])
            if fam == PQ_ADC
            else bf["bytes_per_vector"]
        )
        rows.append(
            {
                "family": fam,
                "what": "bytes/vector",
                "at": "",
                "ours": bo["bytes_per_vector"],
                "faiss": fb,
                "ratio": _ratio(bo["bytes_per_vector"], fb),
                "better": "lower",
            }
        )
    return rows


def _fmt(v, digits=4) -> str:
    if v is None:
        return "None"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def format_ratio_table(rows: list[dict]) -> str:
    head = f"{'family':<18} {'measure':<15} {'at':<22} {'ours':>10} {'faiss':>10} {'ours/faiss':>11}  better"
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = "None" if r["ratio"] is None else f"{r['ratio']:.3f}x"
        lines.append(
            f"{r['family']:<18} {r['what']:<15} {r['at']:<22} {_fmt(r['ours']):>10} "
            f"{_fmt(r['faiss']):>10} {ratio:>11}  {r['better']}"
        )
    return "\n".join(lines)


def format_points(points: list[dict], k: int) -> str:
    head = (
        f"{'method':<16} {'nprobe':>6} {'recall@' + str(k):>9} {'batch QPS':>10} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'1st call s':>10} {'scan pad':>8} {'recomp':>6}"
    )
    lines = [head, "-" * len(head)]
    for p in points:
        recomp = p["compiles_timed_batch"] + p.get("compiles_timed_latency", 0)
        lines.append(
            f"{p['method']:<16} {p['n_probes']:>6} {p['recall']:>9.4f} {p['batch_qps']:>10.1f} "
            f"{_fmt(p.get('latency_p50_ms'), 3):>8} {_fmt(p.get('latency_p99_ms'), 3):>8} "
            f"{p['first_call_s']:>10.3f} {_fmt(p.get('scan_padding'), 3):>8} {recomp:>6}"
        )
    return "\n".join(lines)


def format_builds(builds: dict) -> str:
    head = (
        f"{'build':<16} {'train s':>8} {'add s':>8} {'compile s':>9} {'warm train':>10} "
        f"{'warm add':>9} {'bytes/vec':>9} {'pad ratio':>9}"
    )
    lines = [head, "-" * len(head)]
    seen = set()
    for name, b in builds.items():
        if id(b) in seen:  # the two PQ methods of one implementation share a build
            continue
        seen.add(id(b))
        c, w = b["cold"], b.get("warm")
        comp = "-"
        if b["impl"] == "ours":
            comp = f"{c['compile_train']['seconds'] + c['compile_add']['seconds']:.2f}"
        lines.append(
            f"{name:<16} {c['train_s']:>8.2f} {c['add_s']:>8.2f} {comp:>9} "
            f"{_fmt(w and w['train_s'], 3) if w else '-':>10} {_fmt(w and w['add_s'], 3) if w else '-':>9} "
            f"{b['bytes_per_vector']:>9.1f} {_fmt(b.get('padding_ratio'), 3):>9}"
        )
    return "\n".join(lines)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items() if not str(k).startswith("_")}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(_jsonable(result), f, indent=1)
        f.write("\n")


def plot(points: list[dict], path: Path, *, k: int, title: str, targets: dict) -> None:
    """Recall@k (x, linear) against QPS (y, log), one line per method, points
    labelled with n_probes: batch QPS on the left, single-query 1/p50 on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(FAMILIES, ("tab:blue", "tab:orange", "tab:green")))
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    panels = (
        ("batch_qps", "batch queries/s (all queries, one call)"),
        ("latency_p50_ms", "single-query queries/s (1 / p50 latency)"),
    )
    for ax, (key, ylabel) in zip(axes, panels):
        for name in dict.fromkeys(p["method"] for p in points):
            pts = sorted(
                (p for p in points if p["method"] == name and p.get(key)),
                key=lambda p: p["n_probes"],
            )
            if not pts:
                continue
            x = [p["recall"] for p in pts]
            y = [p[key] if key == "batch_qps" else 1e3 / p[key] for p in pts]
            ours = pts[0]["impl"] == "ours"
            ax.plot(
                x,
                y,
                "-o" if ours else "--s",
                color=colours[pts[0]["family"]],
                label=name,
                markersize=4,
                linewidth=1.5 if ours else 1.0,
            )
            for p, xi, yi in zip(pts, x, y):
                ax.annotate(
                    str(p["n_probes"]),
                    (xi, yi),
                    textcoords="offset points",
                    xytext=(3, 3),
                    fontsize=7,
                )
        for fam, ts in targets.items():
            for t in ts:
                ax.axvline(t, color=colours.get(fam, "grey"), linestyle=":", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlabel(f"recall@{k}")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_recall_qps(curves: dict, path: Path, *, title: str, k: int) -> None:
    """One line per name of ``curves`` (``{name: [{"n_probes", "recall",
    "batch_qps"}, ...]}``): recall@k (x) against batch queries/s (y, log),
    points labelled with n_probes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, pts in curves.items():
        ax.plot([p["recall"] for p in pts], [p["batch_qps"] for p in pts], "-o", label=name)
        for p in pts:
            ax.annotate(str(p["n_probes"]), (p["recall"], p["batch_qps"]), fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{k}")
    ax.set_ylabel("batch queries/s")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
