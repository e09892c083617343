"""`swarmrl plot RUN_DIR`: the curves of a run as one PNG.

A panel is drawn when some step logged its first metric; a panel of several metrics (the replay
layer's Brier score beside the global-mean baseline it must beat) draws each one it finds, with a
legend.  Six panels to a row.
"""

from __future__ import annotations

from pathlib import Path

from node.metrics import read_metrics

PANELS: list[tuple[tuple[str, ...], str]] = [
    (("reward_mean",), "reward (mean)"),
    (("reward/correctness",), "correctness"),
    (("reward/format",), "format"),
    (("entropy",), "entropy"),
    (("completion_len",), "completion length"),
    (("grad_norm",), "grad norm"),
    (("replay/nonzero_share",), "groups with signal"),
    (("replay/brier", "replay/brier_global"), "Brier: estimate vs global mean"),
    (("replay/predicted", "replay/realized"), "pass rate: predicted vs realized"),
    (("replay/replay_share",), "replayed share of groups"),
]
LABELS = {"replay/brier": "estimate", "replay/brier_global": "global mean", "replay/predicted": "predicted",
          "replay/realized": "realized"}  # fmt: skip
COLUMNS = 6


def panels(rows: list[dict]) -> list[tuple[tuple[str, ...], str]]:
    """The panels `rows` have data for, each with the metrics of it that some row logged."""
    out = []
    for keys, title in PANELS:
        found = tuple(k for k in keys if any(k in r for r in rows))
        if keys[0] in found:
            out.append((found, title))
    return out


def smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def summary(
    rows: list[dict], keys: tuple[str, ...] = ("reward_mean", "reward/correctness", "reward/format")
) -> str:
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
    shown = panels(rows)
    if not shown:
        raise ValueError(f"{run_dir}/metrics.jsonl has none of the plotted metrics")
    ncols = min(COLUMNS, len(shown))
    nrows = -(-len(shown) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.8 * nrows), squeeze=False)
    window = max(1, len(rows) // 10)
    for ax, (keys, title) in zip(axes.flat, shown):
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if key in r]
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            raw = ax.plot(xs, ys, alpha=0.35, lw=1)[0]
            same = {} if len(keys) == 1 else {"color": raw.get_color()}  # one colour per metric
            ax.plot(xs, smooth(ys, window), lw=2, label=LABELS.get(key, key), **same)
        if len(keys) > 1:
            ax.legend(fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    out = out or run_dir / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
