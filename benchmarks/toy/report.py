"""Plots (docs/img/toy_*.png) and markdown tables (stdout) from `experiments.py` results.

    python benchmarks/toy/report.py --out runs/toy [--img docs/img]

Tables give mean ± s.d. over seeds; plots show seed means (curves smoothed over 10 steps).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics as st
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def ms(xs: list[float], fmt: str = ".3f") -> str:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return "n/a"
    sd = st.stdev(xs) if len(xs) > 1 else 0.0
    return f"{st.mean(xs):{fmt}} ± {sd:{fmt}}"


def reached(xs: list[float | None], fmt: str = ".0f") -> str:
    """mean ± s.d. over the seeds that reached the target, and how many did."""
    hit = [x for x in xs if x is not None]
    return f"{ms(hit, fmt)} ({len(hit)}/{len(xs)} seeds)"


def field(runs: list[dict], *path: str) -> list[float]:
    out = []
    for r in runs:
        v = r
        for p in path:
            v = v[p] if v is not None else None
        out.append(v)
    return out


def mean_curve(runs: list[dict], key: str, smooth: int = 10) -> list[float]:
    curves = [r["curves"][key] for r in runs]
    n = min(len(c) for c in curves)
    m = [st.mean(c[i] for c in curves) for i in range(n)]
    return [st.mean(m[max(0, i - smooth + 1) : i + 1]) for i in range(n)]


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def save(fig, img: Path, name: str) -> None:
    fig.tight_layout()
    fig.savefig(img / name, dpi=90)
    plt.close(fig)


def mc_grpo(r: dict, img: Path) -> str:
    runs = r["runs"]
    rows, gaps = [], []
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    for kind, ls in (("binary", "-"), ("noisy", "--")):
        for est in ("grpo", "mc_grpo"):
            finals, flips = [], []
            for g in (2, 4, 8):
                v = runs.get(f"{kind}/G{g}/{est}")
                if v is None:
                    continue
                rows.append(
                    [
                        kind,
                        str(g),
                        est,
                        ms(field(v, "flip_rate")),
                        ms(field(v, "zero_rate")),
                        ms(field(v, "final_p")),
                    ]
                )
                finals.append(st.mean(field(v, "final_p")))
                flips.append(st.mean(field(v, "flip_rate")))
            if len(finals) == 3:
                g2, g8 = runs[f"{kind}/G2/{est}"], runs[f"{kind}/G8/{est}"]
                gap = [b["final_p"] - a["final_p"] for a, b in zip(g2, g8, strict=True)]
                gaps.append([kind, est, ms(gap)])
                ax[0].plot([2, 4, 8], flips, ls, marker="o", label=f"{kind} {est}")
                ax[1].plot([2, 4, 8], finals, ls, marker="o", label=f"{kind} {est}")
    ax[0].set(xlabel="G", ylabel="sign-flip rate vs true mean", xticks=[2, 4, 8])
    ax[1].set(xlabel="G", ylabel=f"mean p after {r['steps']} steps", xticks=[2, 4, 8])
    ax[1].legend(fontsize=7)
    save(fig, img, "toy_mc_grpo.png")
    return (
        table(["rewards", "G", "estimator", "sign-flip rate", "zero-advantage rate", "final mean p"], rows)
        + "\n\n"
        + table(["rewards", "estimator", "gap: final p(G=8) - p(G=2)"], gaps)
    )


def dynamic_sampling(r: dict, img: Path) -> str:
    rows = []
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    for label, v in r["runs"].items():
        rows.append(
            [
                label,
                ms(field(v, "eff_grad_ratio")),
                ms(field(v, "final_p")),
                reached(field(v, "steps_to_target")),
                reached(field(v, "rollouts_to_target")),
                ms(field(v, "rollouts"), ".0f"),
            ]
        )
        n = min(len(run["curve"]) for run in v)
        c = v[0]["curve"][:n]
        ax[0].plot(
            [x[0] for x in c], [st.mean(run["curve"][i][1] for run in v) for i in range(n)], label=label
        )
        ax[1].plot([x[2] for x in c], [x[1] for x in c], label=f"{label} (seed 0)")
    ax[0].set(xlabel="optimizer step", ylabel="mean p")
    ax[1].set(xlabel="rollouts", ylabel="mean p")
    ax[0].legend(fontsize=7)
    save(fig, img, "toy_dynamic_sampling.png")
    target = next(iter(r["runs"].values()))[0]["target"]
    return table(
        [
            "variant",
            "effective-gradient ratio",
            "final mean p",
            f"steps to p>={target}",
            f"rollouts to p>={target}",
            "rollouts in total",
        ],
        rows,
    )


def curves_plot(r: dict, img: Path, name: str, keys: list[tuple[str, str]]) -> None:
    fig, ax = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4))
    for a, (key, ylabel) in zip(ax, keys, strict=True):
        for label, v in r["runs"].items():
            if v and v[0].get("curves") and key in v[0]["curves"]:
                a.plot(mean_curve(v, key), label=label)
        a.set(xlabel="RL step", ylabel=ylabel)
    ax[0].legend(fontsize=7)
    save(fig, img, name)


def dynamic_sampling_t2(r: dict, img: Path) -> str:
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    rows = []
    for label, v in r["runs"].items():
        curve = mean_curve(v, "first_pass")
        ax[0].plot(curve, label=label)
        ax[1].plot(v[0]["curves"]["rollouts"][: len(curve)], curve, label=label)
        rows.append(
            [
                label,
                ms(field(v, "eff_grad_ratio")),
                ms(field(v, "eval", "all")),
                reached(field(v, "steps_to_target")),
                reached(field(v, "rollouts_to_target")),
                ms(field(v, "rollouts"), ".0f"),
            ]
        )
    ax[0].set(xlabel="RL step", ylabel="pass rate of fresh samples")
    ax[1].set(xlabel="rollouts (seed 0)", ylabel="pass rate of fresh samples")
    ax[0].legend(fontsize=7)
    save(fig, img, "toy_dynamic_sampling_t2.png")
    target = next(iter(r["runs"].values()))[0]["target"]
    return table(
        [
            "variant",
            "effective-gradient ratio",
            "held-out pass@1",
            f"steps to fresh pass rate >= {target}",
            "rollouts to it",
            "rollouts in total",
        ],
        rows,
    )


def clip_higher(r: dict, img: Path) -> str:
    curves_plot(r, img, "toy_clip_higher.png", [("entropy", "token entropy"), ("correct", "train pass rate")])
    rows = [
        [k, ms(field(v, "entropy_end")), ms(field(v, "correct_end")), ms(field(v, "clip_frac"), ".4f")]
        for k, v in r["runs"].items()
    ]
    return table(["variant", "entropy (last 10 steps)", "train pass rate (last 10)", "clip fraction"], rows)


def gdpo(r: dict, img: Path) -> str:
    curves_plot(
        r,
        img,
        "toy_gdpo.png",
        [
            ("correct", "train correct rate"),
            ("format", "train format rate"),
            ("distinct_gdpo", "distinct GDPO adv. / group"),
            ("distinct_grpo", "distinct GRPO adv. / group"),
        ],
    )
    rows = []
    for k, v in r["runs"].items():
        for span, key in (("all steps", "distinct"), ("first 10 steps", "distinct_first10")):
            rows.append(
                [
                    k,
                    span,
                    ms(field(v, key, "combos"), ".2f"),
                    ms(field(v, key, "grpo"), ".2f"),
                    ms(field(v, key, "gdpo"), ".2f"),
                    ms(field(v, "correct_end")) if span == "all steps" else "",
                    ms(field(v, "format_end")) if span == "all steps" else "",
                ]
            )
    return table(
        [
            "trained with",
            "steps",
            "distinct (correct, format) pairs / group",
            "distinct GRPO adv. / group",
            "distinct GDPO adv. / group (same batches)",
            "correct (last 10)",
            "format (last 10)",
        ],
        rows,
    )


def w_reinforce(r: dict, img: Path) -> str:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    rows = []
    ks = None
    for label, v in r["runs"].items():
        ks = list(v[0]["pass_at_k"])
        means = [st.mean(field(v, "pass_at_k", k)) for k in ks]
        ax.plot([int(k) for k in ks], means, marker="o", label=label)
        rows.append([label] + [ms(field(v, "pass_at_k", k)) for k in ks])
    ax.set(xscale="log", xlabel="k", ylabel="pass@k (held-out)")
    ax.legend(fontsize=7)
    save(fig, img, "toy_w_reinforce.png")
    out = table(["variant"] + [f"pass@{k}" for k in ks or []], rows)
    by_level = [
        [label, lv] + [ms(field(v, "pass_at_k_by_level", k, lv)) for k in ks]
        for label, v in r["runs"].items()
        if "pass_at_k_by_level" in v[0]
        for lv in ("L3", "L4")
    ]
    if by_level:
        out += "\n\nThe two hardest levels alone:\n\n" + table(
            ["variant", "level"] + [f"pass@{k}" for k in ks or []], by_level
        )
    return out


def entropy_mask(r: dict, img: Path) -> str:
    curves_plot(
        r, img, "toy_entropy_mask.png", [("correct", "train pass rate"), ("entropy", "token entropy")]
    )
    full = field(r["runs"]["full"], "eval", "all") if "full" in r["runs"] else None
    rows = [
        [k, ms(field(v, "correct_end")), ms(field(v, "eval", "all"))]
        + [ms([a - b for a, b in zip(field(v, "eval", "all"), full, strict=True)]) if full else "n/a"]
        + [ms(field(v, "eval", f"L{i}")) for i in (1, 2, 3, 4)]
        for k, v in r["runs"].items()
    ]
    return table(
        [
            "variant",
            "train pass (last 10)",
            "held-out pass@1",
            "paired diff. vs full",
            "L1",
            "L2",
            "L3",
            "L4",
        ],
        rows,
    )


def lag(r: dict, img: Path) -> str:
    runs = r["runs"]
    methods = sorted({k.split("/")[0] for k in runs}, key=["ppo", "decoupled", "tis", "m2po", "ess_lr"].index)
    lags = [0, 2, 8, 32, 128]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    rows = []
    for m in methods:
        xs, ys, gs = [], [], []
        for lg in lags:
            v = runs.get(f"{m}/lag{lg}") or (runs.get("ppo/lag0") if lg == 0 else None)
            if v is None:
                continue
            xs.append(lg)
            ys.append(st.mean(field(v, "eval", "all")))
            gs.append(st.mean(field(v, "grad_norm_var")))
            collapsed = sum(x["eval"]["all"] < 0.5 * x["eval_warm"]["all"] for x in v)
            rows.append(
                [
                    m,
                    str(lg),
                    ms(field(v, "eval_warm", "all")),
                    ms(field(v, "eval", "all")),
                    f"{collapsed}/{len(v)}",
                    ms(field(v, "correct_end")),
                    ms(field(v, "grad_norm_var"), ".4f"),
                ]
            )
        pos = [math.log2(x + 1) for x in xs]
        ax[0].plot(pos, ys, marker="o", label=m)
        ax[1].plot(pos, gs, marker="o", label=m)
    for a, yl in zip(ax, ("held-out pass@1 after training", "grad-norm variance"), strict=True):
        a.set(
            xlabel="lag (optimizer steps)",
            ylabel=yl,
            xticks=[math.log2(x + 1) for x in lags],
            xticklabels=lags,
        )
    ax[1].set_yscale("log")
    ax[0].legend(fontsize=7)
    save(fig, img, "toy_lag.png")
    return table(
        [
            "method",
            "lag",
            "held-out pass@1: warm start",
            "after RL",
            "collapsed (< half the warm start)",
            "train pass (last 10)",
            "grad-norm variance",
        ],
        rows,
    )


REPORTS = {
    "mc_grpo": mc_grpo,
    "dynamic_sampling": dynamic_sampling,
    "dynamic_sampling_t2": dynamic_sampling_t2,
    "clip_higher": clip_higher,
    "gdpo": gdpo,
    "w_reinforce": w_reinforce,
    "entropy_mask": entropy_mask,
    "lag": lag,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("runs/toy"))
    ap.add_argument("--img", type=Path, default=Path("docs/img"))
    args = ap.parse_args()
    args.img.mkdir(parents=True, exist_ok=True)
    for name, fn in REPORTS.items():
        path = args.out / f"{name}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        wall = round(sum(r.get("wall_s", {}).values()), 1)
        print(f"## {name}  (steps {r['steps']}, seeds {r['seeds']}, wall {wall} s)\n")
        print(fn(r, args.img))
        print()


if __name__ == "__main__":
    main()
