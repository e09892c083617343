"""Tables (markdown on stdout) and plots (docs/img/sapo_*.png) from `run.py` results.

    .venv/bin/python benchmarks/sapo/report.py [--results benchmarks/sapo/results] [--img docs/img]

What is measured (not the paper's measure: Amico et al. 2025 report reward "accumulated across
agents and rounds", and their code logs the reward of the whole training batch, peer groups
included): an agent's *own* cumulative reward, the sum over rounds of the mean correctness of
the groups it sampled itself that round (its I local groups, plus any of the J slots the swarm
could not fill).  Peer groups never count, so sharing cannot raise the measure by importing
good samples; it must make the agent's own policy better.  A run's value is the mean over its
agents (honest ones in ``liar``, per size in ``mixed``); tables give mean +- s.d. over seeds,
the gain against 8/0 as a ratio of seed means and as mean +- s.d. of paired per-seed gains (a
seed fixes the warm start and the task, so pairs share them), held-out pass@1 at the start and
the end, and the held-out gain per 10,000 completions the agent sampled (what a user pays for).
Curves are means over agents and seeds.
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


def heldout_gain_per_10k(a: Agent) -> float:
    return 1e4 * (a["eval_end"]["all"] - a["eval_start"]["all"]) / a["generated"]


def mean_curve(runs: list[dict], pick: Pick = ALL, cumulative: bool = True, smooth: int = 15) -> list[float]:
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


def per_round(agents: list[Agent], key: str) -> float:
    rounds = sum(len(a["curves"]["reward"]) for a in agents)
    return sum(sum(x or 0 for x in a["curves"].get(key, [])) for a in agents) / rounds


def row(
    label: str, runs: list[dict], base: list[dict] | None, pick: Pick = ALL, base_pick: Pick = ALL
) -> list[str]:
    c = per_seed(runs, cum, pick)
    gain, paired = "", ""
    if base is not None and base is not runs:
        b = per_seed(base, cum, base_pick)
        gain = f"{100 * (st.mean(c.values()) / st.mean(b.values()) - 1):+.1f}%"
        pairs = [100 * (c[s] / b[s] - 1) for s in c if s in b]
        paired = ms(pairs) + "%" if pairs else ""
    agents = [a for r in runs for a in r["agents"] if pick(a)]
    start = ms(list(per_seed(runs, lambda a: a["eval_start"]["all"], pick).values()), ".3f")
    end = ms(list(per_seed(runs, lambda a: a["eval_end"]["all"], pick).values()), ".3f")
    per10k = ms(list(per_seed(runs, heldout_gain_per_10k, pick).values()), ".3f")
    sampled = st.mean(a["generated"] for a in agents)
    secs = st.mean(a["seconds"] / len(a["curves"]["reward"]) for a in agents)
    return [label, str(len(runs)), ms(list(c.values())), gain, paired, start, end, per10k, f"{sampled:,.0f}",
            f"{per_round(agents, 'external_groups'):.2f} / {per_round(agents, 'filled_locally'):.2f}",
            f"{secs:.2f}"]  # fmt: skip


HEADER = ["config", "seeds", "own cumulative reward", "vs base (of means)", "vs base, paired per seed",
          "held-out start", "held-out end", "held-out gain per 10k sampled", "completions sampled per agent",
          "external / filled per round", "s/round"]  # fmt: skip


def table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def verdict(runs: dict[str, list[dict]]) -> str:
    """The decision rule fixed before the re-run (docs/experiments.md): sharing pays on this
    harness if 4/4 beats 8/0 in own cumulative reward on every seed."""
    if "4/4" not in runs or "8/0" not in runs:
        return ""
    c44, c80 = per_seed(runs["4/4"], cum), per_seed(runs["8/0"], cum)
    seeds = sorted(set(c44) & set(c80))
    wins = [s for s in seeds if c44[s] > c80[s]]
    per = ", ".join(f"seed {s}: {c44[s]:.1f} vs {c80[s]:.1f}" for s in seeds)
    return f"Decision rule (4/4 beats 8/0 on every seed): {'HOLDS' if len(wins) == len(seeds) else 'FAILS'} ({per})"


def plot(curves: dict[str, tuple[list[dict], Pick]], title: str, path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, (runs, pick) in curves.items():
        ax1.plot(mean_curve(runs, pick), label=label)
        ax2.plot(mean_curve(runs, pick, cumulative=False), label=label)
    ax1.set(xlabel="round", ylabel="own cumulative reward", title=f"{title}: own cumulative reward")
    ax2.set(xlabel="round", ylabel="mean own reward (15-round mean)", title=f"{title}: own reward per round")
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
        print("\n" + verdict(ij["runs"]))
        plot({label: (runs, ALL) for label, runs in ij["runs"].items()}, "I/J", img / "sapo_ij.png")
    liar = load("liar")
    if liar:
        honest44 = ij["runs"].get("4/4") if ij else None
        print(f"\n## One liar among {liar['agents']} agents, 4/4 (honest agents; base: 4/4 without a liar)\n")
        print(table([row(label, runs, honest44, HONEST) for label, runs in liar["runs"].items()]))
        for label, runs in liar["runs"].items():
            refused = [
                a["verdicts"].get("reward_mismatch", 0) for r in runs for a in r["agents"] if HONEST(a)
            ]
            print(f"- {label}: groups refused as REWARD_MISMATCH per honest agent: {ms(refused, '.0f')}")
        curves = {f"{label} (honest agents)": (runs, HONEST) for label, runs in liar["runs"].items()}
        curves.update({k: (ij["runs"][k], ALL) for k in ("4/4", "8/0") if ij and k in ij["runs"]})
        plot(curves, "one liar", img / "sapo_liar.png")
    mixed = load("mixed")
    if mixed:
        print(
            f"\n## Mixed sizes ({mixed['agents']} agents: half d_model=64 n_layer=2, half d_model=32 n_layer=1)\n"
        )
        b = mixed["runs"].get("mixed 8/0")
        rows = [row(f"{label} {size}", runs, b, pick, pick) for label, runs in mixed["runs"].items()
                for size, pick in (("large", LARGE), ("small", SMALL))]  # fmt: skip
        print(table(rows))
    off = load("offpolicy")
    if off:
        print(f"\n## Off-policy diagnostics ({off['agents']} agents; base: 8/0 at the same learning rate)\n")
        seeds = {r["seed"] for runs in off["runs"].values() for r in runs}
        runs = {**({k: ij["runs"][k] for k in ("8/0", "4/4")} if ij else {}), **off["runs"]}
        same = {k: [r for r in v if r["seed"] in seeds] for k, v in runs.items()}
        bases = {k: same.get("8/0 lr1e-4" if "lr1e-4" in k else "8/0") for k in same}
        print(table([row(k, v, bases[k]) for k, v in same.items()]))
        n = off["rounds"]
        print(f"\nDrift of the peer completions trained on, rounds 1-25 / {n - 24}-{n}:\n")
        for k, v in same.items():
            if any(
                x is not None for r in v for a in r["agents"] for x in a["curves"].get("ext_far_tokens", [])
            ):
                print(drift_line(k, v, n))
        plot({k: (v, ALL) for k, v in same.items()}, "off-policy diagnostics", img / "sapo_offpolicy.png")


def drift_line(label: str, runs: list[dict], n: int) -> str:
    """Mean per-round drift of the peer completions trained on, over the first and last 25 rounds."""

    def avg(key: str, lo: int, hi: int) -> str:
        xs = [x for r in runs for a in r["agents"] for x in a["curves"].get(key, [])[lo:hi] if x is not None]
        return f"{st.mean(xs):.2f}" if xs else "n/a"

    return (f"- {label}: mean sequence log-ratio log pi_local - log mu_peer {avg('ext_seq_logratio', 0, 25)} / "
            f"{avg('ext_seq_logratio', n - 25, n)}; share of tokens whose ratio is off 1 by > 0.2: "
            f"{avg('ext_far_tokens', 0, 25)} / {avg('ext_far_tokens', n - 25, n)}")  # fmt: skip


if __name__ == "__main__":
    main()
