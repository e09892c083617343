"""Tables (markdown on stdout) and plots (docs/img/sapo_*.png) from `run.py` results.

    .venv/bin/python benchmarks/sapo/report.py [--results benchmarks/sapo/results] [--img docs/img]

The paper's measure (Amico et al. 2025, Fig. 2): an agent's cumulative reward is the sum over
rounds of the mean reward of its own local rollouts.  A run's value is the mean over its agents
(over the honest ones in ``liar``, per model size in ``mixed``); tables give mean ± s.d. over
seeds and the gain against 8/0 both as a ratio of seed means and as the mean ± s.d. of paired
per-seed gains (a seed fixes the warm start, so pairs share it).  Curves are means over agents
and seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics as st
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Agent = dict[str, Any]
Pick = Callable[[Agent], bool]
ALL: Pick = lambda a: True  # noqa: E731
HONEST: Pick = lambda a: "--liar" not in a["extra"]  # noqa: E731
SMALL: Pick = lambda a: "--d-model" in a["extra"]  # noqa: E731
LARGE: Pick = lambda a: "--d-model" not in a["extra"]  # noqa: E731


def ms(xs: list[float], fmt: str = ".1f") -> str:
    sd = st.stdev(xs) if len(xs) > 1 else 0.0
    return f"{st.mean(xs):{fmt}} ± {sd:{fmt}}"


def per_seed(runs: list[dict], value: Callable[[Agent], float], pick: Pick = ALL) -> dict[int, float]:
    """seed -> mean over the picked agents of `value`."""
    return {r["seed"]: st.mean(value(a) for a in r["agents"] if pick(a)) for r in runs}


def cum(a: Agent) -> float:
    return float(sum(a["curves"]["reward"]))


def mean_curve(runs: list[dict], pick: Pick = ALL, cumulative: bool = True, smooth: int = 25) -> list[float]:
    curves = [a["curves"]["reward"] for r in runs for a in r["agents"] if pick(a)]
    n = min(len(c) for c in curves)
    m = [st.mean(c[i] for c in curves) for i in range(n)]
    if cumulative:
        out, total = [], 0.0
        for x in m:
            total += x
            out.append(total)
        return out
    return [st.mean(m[max(0, i - smooth + 1) : i + 1]) for i in range(n)]


def row(
    label: str, runs: list[dict], base: list[dict] | None, pick: Pick = ALL, base_pick: Pick = ALL
) -> list[str]:
    c = per_seed(runs, cum, pick)
    gain, paired = "", ""
    if base is not None:
        b = per_seed(base, cum, base_pick)
        gain = f"{100 * (st.mean(c.values()) / st.mean(b.values()) - 1):+.1f}%"
        pairs = [100 * (c[s] / b[s] - 1) for s in c if s in b]
        paired = ms(pairs) + "%" if pairs else ""
    agents = [a for r in runs for a in r["agents"] if pick(a)]
    rounds = sum(len(a["curves"]["reward"]) for a in agents)
    ext = sum(sum(a["curves"]["external"]) for a in agents) / rounds
    fill = sum(sum(a["curves"]["filled"]) for a in agents) / rounds
    start = ms(list(per_seed(runs, lambda a: a["eval_start"]["all"], pick).values()), ".3f")
    end = ms(list(per_seed(runs, lambda a: a["eval_end"]["all"], pick).values()), ".3f")
    secs = st.mean(a["seconds"] / len(a["curves"]["reward"]) for a in agents)
    return [label, str(len(runs)), ms(list(c.values())), gain, paired, start, end,
            f"{ext:.2f}", f"{fill:.2f}", f"{secs:.2f}"]  # fmt: skip


HEADER = ["config", "seeds", "cumulative reward", "gain vs base", "paired gain", "held-out start",
          "held-out end", "external/round", "filled/round", "s/round"]  # fmt: skip


def table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def plot(curves: dict[str, tuple[list[dict], Pick]], title: str, path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, (runs, pick) in curves.items():
        ax1.plot(mean_curve(runs, pick), label=label)
        ax2.plot(mean_curve(runs, pick, cumulative=False), label=label)
    ax1.set(xlabel="round", ylabel="cumulative reward", title=f"{title}: cumulative reward")
    ax2.set(xlabel="round", ylabel="mean local reward (25-round mean)", title=f"{title}: reward per round")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"\n![{title}]({path})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default="benchmarks/sapo/results")
    p.add_argument("--img", default="docs/img")
    args = p.parse_args()
    res, img = Path(args.results), Path(args.img)
    img.mkdir(parents=True, exist_ok=True)

    def load(name: str) -> dict[str, Any] | None:
        path = res / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    ij = load("ij")
    base = ij["runs"].get("8/0") if ij else None
    if ij:
        print(f"## I/J ({ij['agents']} agents, {ij['rounds']} rounds; {ij['machine']})\n")
        print(table([row(label, runs, base) for label, runs in ij["runs"].items()]))
        plot({label: (runs, ALL) for label, runs in ij["runs"].items()}, "I/J", img / "sapo_ij.png")
    liar = load("liar")
    if liar:
        honest44 = ij["runs"].get("4/4") if ij else None
        print(f"\n## One liar among {liar['agents']} agents, 4/4 (honest agents; base: 4/4 without a liar)\n")
        rows = [row(label, runs, honest44, HONEST) for label, runs in liar["runs"].items()]
        print(table(rows + ([row("4/4, no liar (gain vs 8/0)", honest44, base)] if honest44 else [])))
        for label, runs in liar["runs"].items():
            lies = [sum(a["lies_by_origin"].values()) for r in runs for a in r["agents"] if HONEST(a)]
            print(
                f"- {label}: completions whose claim disagreed with the local score, per honest agent: {ms(lies, '.0f')}"
            )
        curves = {label: (runs, HONEST) for label, runs in liar["runs"].items()}
        curves.update({k: (ij["runs"][k], ALL) for k in ("4/4", "8/0") if ij and k in ij["runs"]})
        plot(curves, "one liar (honest agents)", img / "sapo_liar.png")
    mixed = load("mixed")
    if mixed:
        print(
            f"\n## Mixed sizes ({mixed['agents']} agents: half d_model=64 n_layer=2, half d_model=32 n_layer=1)\n"
        )
        b = mixed["runs"].get("mixed 8/0")
        rows = []
        for label, runs in mixed["runs"].items():
            for size, pick in (("large", LARGE), ("small", SMALL)):
                rows.append(row(f"{label} {size}", runs, b, pick, pick))
        print(table(rows))
        curves = {f"{label} {size}": (runs, pick) for label, runs in mixed["runs"].items()
                  for size, pick in (("large", LARGE), ("small", SMALL))}  # fmt: skip
        plot(curves, "mixed sizes", img / "sapo_mixed.png")
    off = load("offpolicy")
    if off:
        print(f"\n## Off-policy diagnostics ({off['agents']} agents; base: 8/0 at the same learning rate)\n")
        runs = {**({k: ij["runs"][k] for k in ("8/0", "4/4")} if ij else {}), **off["runs"]}
        seeds = {r["seed"] for r in off["runs"]["4/4 reuse+tis"]} if "4/4 reuse+tis" in off["runs"] else None
        same = {k: [r for r in v if seeds is None or r["seed"] in seeds] for k, v in runs.items()}
        bases = {k: same.get("8/0 lr1e-4" if "lr1e-4" in k else "8/0") for k in same}
        print(table([row(k, v, bases[k]) for k, v in same.items()]))
        print("\nDrift of the external completions trained on (rounds where every chosen group carried its")
        print("sampler's log-probs: the recompute runs of `ij` predate that):\n")
        for k, v in same.items():
            if any(
                x is not None for r in v for a in r["agents"] for x in a["curves"].get("ext_far_tokens", [])
            ):
                print(drift_line(k, v))
        plot({k: (v, ALL) for k, v in same.items()}, "off-policy diagnostics", img / "sapo_offpolicy.png")


def drift_line(label: str, runs: list[dict]) -> str:
    """Mean per-round drift of the external completions trained on (rounds where every chosen
    group carried its sampler's log-probs), over rounds 1-50 and 251-300."""

    def avg(key: str, lo: int, hi: int) -> str:
        xs = [x for r in runs for a in r["agents"] for x in a["curves"].get(key, [])[lo:hi] if x is not None]
        return f"{st.mean(xs):.2f}" if xs else "n/a"

    return (f"- {label}: mean sequence log-ratio log pi_local - log mu_peer {avg('ext_seq_logratio', 0, 50)} "
            f"in rounds 1-50, {avg('ext_seq_logratio', 250, 300)} in 251-300; share of tokens whose ratio is "
            f"off 1 by > 0.2: {avg('ext_far_tokens', 0, 50)}, {avg('ext_far_tokens', 250, 300)}")  # fmt: skip


if __name__ == "__main__":
    main()
