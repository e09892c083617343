"""`swarmrl plot RUN_DIR`: the curves of a run as one PNG."""

from __future__ import annotations

from pathlib import Path

from node.metrics import read_metrics

PANELS = [
    ("reward_mean", "reward (mean)"),
    ("reward/correctness", "correctness"),
    ("reward/format", "format"),
    ("entropy", "entropy"),
    ("completion_len", "completion length"),
    ("grad_norm", "grad norm"),
]


def smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def summary(rows: list[dict], keys: tuple[str, ...] = ("reward_mean", "reward/correctness", "reward/format")) -> str:
    """Mean of each key over the first and the last 20% of steps."""
    n = max(1, len(rows) // 5)
    lines = [f"steps {rows[0]['step']}-{rows[-1]['step']}: mean over the first / last {n} steps"]
    for k in keys:
        vals = [r[k] for r in rows if k in r]
        if vals:
            head, tail = vals[:n], vals[-n:]
            lines.append(f"  {k:20s} {sum(head) / len(head):.3f} -> {sum(tail) / len(tail):.3f}")
    return "\n".join(lines)


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    if not rows:
        raise ValueError(f"{run_dir}/metrics.jsonl has no steps yet")
    panels = [(k, t) for k, t in PANELS if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8), squeeze=False)
    window = max(1, len(rows) // 10)
    for ax, (key, title) in zip(axes[0], panels):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, alpha=0.35, lw=1)
        ax.plot(xs, smooth(ys, window), lw=2)
        ax.set_title(title)
        ax.set_xlabel("step")
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    out = out or run_dir / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
