"""Tables (stdout, markdown) and a plot (IMG/replay_toy.png) from `run.py` results, judged by the
rules in `RULES.md` (written before the runs).

    python benchmarks/replay/report.py --out runs/replay --img docs/img [--json benchmarks/replay/results/wide.json]
"""

from __future__ import annotations

import argparse
import json
import statistics as st
from pathlib import Path
from typing import Any

SELECTORS = ("mopps", "dots", "gdro", "curriculum")


def load(out: Path) -> dict[str, dict[int, dict[str, Any]]]:
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for f in sorted(out.glob("*/s*.json")):
        r = json.loads(f.read_text())
        runs.setdefault(r["arm"], {})[r["seed"]] = r
    return runs


def final(r: dict) -> float:
    return st.mean(c["all"] for c in r["curve"][-3:])


def to_target(r: dict, target: float) -> int | None:
    """Completions generated at the first evaluation whose mean with the one before is >= target."""
    c = r["curve"]
    for i in range(1, len(c)):
        if (c[i]["all"] + c[i - 1]["all"]) / 2 >= target:
            return c[i]["generated"]
    return None


def summarize(runs: dict[str, dict[int, dict]]) -> dict[str, Any]:
    base = runs["uniform"]
    seeds = sorted(base)
    targets = {
        s: base[s]["curve"][0]["all"] + 0.75 * (final(base[s]) - base[s]["curve"][0]["all"]) for s in seeds
    }
    rows = {}
    for arm, by_seed in runs.items():
        common = [s for s in seeds if s in by_seed]
        ttt = [to_target(by_seed[s], targets[s]) for s in common]
        rows[arm] = {
            "seeds": common,
            "start": [by_seed[s]["curve"][0]["all"] for s in common],
            "final": [final(by_seed[s]) for s in common],
            "to_target": ttt,
            "generated": [by_seed[s]["curve"][-1]["generated"] for s in common],
            "means": {k: [by_seed[s]["means"].get(k) for s in common] for k in by_seed[common[0]]["means"]} if common else {},
            "start_levels": {k: st.mean(by_seed[s]["curve"][0][k] for s in common) for k in ("L1", "L2", "L3", "L4")},
        }  # fmt: skip
    return {"targets": targets, "rows": rows}


def verdicts(summary: dict[str, Any]) -> list[str]:
    rows, u = summary["rows"], summary["rows"]["uniform"]
    u_ttt = st.mean(x for x in u["to_target"] if x is not None)
    u_final = st.mean(u["final"])
    out = []

    def ttt_ok(arm: str, factor: float) -> tuple[bool, str]:
        t = rows[arm]["to_target"]
        if any(x is None for x in t):
            return False, f"{sum(x is None for x in t)} seed(s) never reached the target"
        ratio = st.mean(t) / u_ttt
        return ratio <= factor, f"{ratio:.2f}x uniform's completions to target"

    for arm in SELECTORS:
        if arm in rows:
            ok, why = ttt_ok(arm, 0.75)
            fin = st.mean(rows[arm]["final"]) - u_final
            out.append(
                f"- selection `{arm}`: {'PASS' if ok and fin >= -0.01 else 'FAIL'} ({why}; final pass@1 {fin:+.3f} vs uniform)"
            )
    m = u["means"]
    if "replay/brier_unseen" in m:
        beat = [a < b for a, b in zip(m["replay/brier_unseen"], m["replay/brier_unseen_global"])]
        out.append(f"- predictor: {'PASS' if all(beat) else 'FAIL'} (beats the global mean on {sum(beat)}/{len(beat)} seeds; "
                   f"Brier {st.mean(m['replay/brier_unseen']):.4f} vs {st.mean(m['replay/brier_unseen_global']):.4f})")  # fmt: skip
    if "knapsack" in rows:
        k = st.mean(rows["knapsack"]["means"]["replay/nonzero_share"]) / st.mean(m["replay/nonzero_share"])
        out.append(
            f"- knapsack: {'PASS' if k >= 1.2 else 'FAIL'} (non-zero-variance share {k:.2f}x uniform's)"
        )
    for arm in ("replay",):
        if arm in rows:
            ok, why = ttt_ok(arm, 1.0 - 1e-9)
            fin = st.mean(rows[arm]["final"]) - u_final
            out.append(
                f"- replay: {'PASS' if ok and fin >= -0.01 else 'FAIL'} ({why}; final pass@1 {fin:+.3f} vs uniform)"
            )
    return out


def table(summary: dict[str, Any]) -> str:
    def ms(xs: list[float | None], fmt: str) -> str:
        xs = [x for x in xs if x is not None]
        if not xs:
            return "n/a"
        return f"{st.mean(xs):{fmt}} ± {st.stdev(xs) if len(xs) > 1 else 0:{fmt}}"

    lines = ["| arm | final pass@1 | completions to target (seeds reached) | completions in 300 steps | "
             "non-zero-variance groups | replay share |", "|---|---|---|---|---|---|"]  # fmt: skip
    for arm, r in summary["rows"].items():
        hit = sum(x is not None for x in r["to_target"])
        lines.append(
            f"| {arm} | {ms(r['final'], '.3f')} | {ms(r['to_target'], ',.0f')} ({hit}/{len(r['to_target'])}) | "
            f"{ms(r['generated'], ',.0f')} | {ms(r['means'].get('replay/nonzero_share', []), '.3f')} | "
            f"{ms(r['means'].get('replay/replay_share', []), '.2f')} |"
        )
    return "\n".join(lines)


def plot(runs: dict[str, dict[int, dict]], img: Path, name: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm, by_seed in runs.items():
        seeds = sorted(by_seed)
        n = min(len(by_seed[s]["curve"]) for s in seeds)
        ys = [st.mean(by_seed[s]["curve"][i]["all"] for s in seeds) for i in range(n)]
        gen = [st.mean(by_seed[s]["curve"][i]["generated"] for s in seeds) for i in range(n)]
        steps = [by_seed[seeds[0]]["curve"][i]["step"] for i in range(n)]
        style = "-" if arm in ("uniform",) + SELECTORS else "--"
        axes[0].plot(gen, ys, style, label=arm, lw=2 if arm == "uniform" else 1)
        axes[1].plot(steps, ys, style, label=arm, lw=2 if arm == "uniform" else 1)
    axes[0].set_xlabel("completions generated for training")
    axes[1].set_xlabel("step")
    for ax in axes:
        ax.set_ylabel("held-out pass@1 (mean of seeds)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    img.mkdir(parents=True, exist_ok=True)
    path = img / name
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/replay")
    p.add_argument("--img", default=None)
    p.add_argument("--name", default="replay_toy.png")
    p.add_argument("--json", default=None, help="also write the summary here")
    args = p.parse_args()
    runs = load(Path(args.out))
    summary = summarize(runs)
    print("targets per seed:", {s: round(t, 3) for s, t in summary["targets"].items()})
    print(
        "start pass@1 by level (mean of seeds):",
        {k: round(v, 3) for k, v in summary["rows"]["uniform"]["start_levels"].items()},
    )
    print(table(summary))
    print("\n".join(verdicts(summary)))
    if args.img:
        print("plot:", plot(runs, Path(args.img), args.name))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
