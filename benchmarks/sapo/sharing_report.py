"""Tables, verdicts and curves of the sharing experiment (`lockstep.py`), by the decision rule
fixed in docs/sapo.md "The sharing experiment".

    python benchmarks/sapo/sharing_report.py --out runs/sharing [--img docs/img] [--save benchmarks/sapo/results/sharing.json]

Every number is the swarm mean over a run's honest agents (a liar or the different model is left
out), then the mean (and s.d.) over seeds.  "final": mean of the last two evaluations; "gain":
final - round 0.  "own reward": mean correctness of the agent's own local groups over all rounds;
"batch reward": mean reward of every group it trained on, peers' included (the SAPO paper's
measure, labelled as such: it rises with sharing whether or not the agent learns more).
"""

from __future__ import annotations

import argparse
import json
import statistics as st
from collections import defaultdict
from pathlib import Path
from typing import Any


def compact(d: dict[str, Any]) -> dict[str, Any]:
    """One run, per agent: the evaluations and the means the report needs (the raw files keep
    every round)."""
    agents = []
    for a in d["agents"]:
        rounds = a["rounds"]
        mean = lambda key, rounds=rounds: st.fmean(r.get(key, 0.0) for r in rounds)  # noqa: E731
        agents.append({
            "index": a["index"], "odd": a["odd"], "generated": a["generated"],
            "evals": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in e.items()} for e in a["evals"]],
            "own_reward": round(mean("reward_local"), 4), "batch_reward": round(mean("reward_mean"), 4),
            "external_groups": round(mean("swarm/external_groups"), 3),
            "zero_var_groups": round(mean("zero_var_groups"), 3),
            "peer_signal_share": round(mean("swarm/peer_signal_share"), 4),
            "verdicts": (a.get("swarm") or {}).get("verdicts", {}),
            "reports": (a.get("swarm") or {}).get("reports", {}),
        })  # fmt: skip
    return {"regime": d["regime"], "arm": d["arm"], "seed": d["seed"], "rounds": d["rounds"], "agents": agents}


def from_run_py(path: Path) -> list[dict[str, Any]]:
    """`run.py --exp sharing-REGIME` results (separate processes over hivemind) in `compact`'s
    form; those runs evaluate held-out pass@1 at the start and the end only."""
    data = json.loads(path.read_text())
    regime = data["exp"].split("-", 1)[1]
    out = []
    for arm, runs in data["runs"].items():
        for r in runs:
            agents = [{
                "index": a["index"], "odd": False, "generated": a["generated"],
                "evals": [{"round": 0, "generated": 0, **a["eval_start"]},
                          {"round": data["rounds"], "generated": a["generated"], **a["eval_end"]}],
                "own_reward": st.fmean(a["curves"]["reward"]), "batch_reward": float("nan"),
                "external_groups": st.fmean(a["curves"].get("external_groups", [0.0])),
            } for a in r["agents"]]  # fmt: skip
            out.append({"regime": regime, "arm": arm, "seed": r["seed"], "rounds": data["rounds"], "agents": agents})
    return out


def run_numbers(run: dict[str, Any]) -> dict[str, Any]:
    honest = [a for a in run["agents"] if not a["odd"]]
    n_eval = len(honest[0]["evals"])
    curve = [st.fmean(a["evals"][i]["all"] for a in honest) for i in range(n_eval)]
    generated = [st.fmean(a["evals"][i]["generated"] for a in honest) for i in range(n_eval)]
    final = st.fmean(curve[-2:]) if n_eval > 2 else curve[-1]  # run.py evaluates at the start and end only
    last = lambda a: st.fmean(e["all"] for e in a["evals"][-2:]) if n_eval > 2 else a["evals"][-1]["all"]  # noqa: E731
    by_index = {a["index"]: last(a) for a in honest}
    return {
        "seed": run["seed"], "curve": curve, "generated_curve": generated, "start": curve[0], "final": final,
        "gain": final - curve[0], "own": st.fmean(a["own_reward"] for a in honest),
        "batch": st.fmean(a["batch_reward"] for a in honest), "generated": st.fmean(a["generated"] for a in honest),
        "ext": st.fmean(a["external_groups"] for a in honest), "by_index": by_index,
    }  # fmt: skip


def ms(xs: list[float], fmt: str = ".3f") -> str:
    if any(x != x for x in xs):  # NaN: not recorded by that harness
        return "-"
    sd = fmt.lstrip("+")
    return f"{st.fmean(xs):{fmt}} ± {st.stdev(xs):{sd}}" if len(xs) > 1 else f"{xs[0]:{fmt}}"


def paired(a: list[dict], b: list[dict], key: str) -> list[float]:
    bs = {r["seed"]: r for r in b}
    return [r[key] - bs[r["seed"]][key] for r in a if r["seed"] in bs]


def verdicts(regime: str, arms: dict[str, list[dict]]) -> list[str]:
    out = []
    get = arms.get
    if regime in ("sparse", "hetero") and all(get(k) for k in ("4/4 info", "8/0", "4/0", "4/4 uniform")):
        for ours in ("4/4 info", "4/4 info adaptive", "4/4 info reuse", "4/4 info adaptive reuse"):
            if not get(ours):
                continue
            pairs = paired(arms[ours], arms["8/0"], "final")
            wins = sum(d > 0 for d in pairs)
            ratio = st.fmean(r["generated"] for r in arms[ours]) / st.fmean(r["generated"] for r in arms["8/0"])
            a_ok = wins >= 4 and len(pairs) >= 5 and ratio <= 0.55
            ours_gain = st.fmean(paired(arms[ours], arms["4/0"], "gain"))
            sapo_gain = st.fmean(paired(arms["4/4 uniform"], arms["4/0"], "gain"))
            b_ok = ours_gain > 0 and ours_gain >= 1.3 * sapo_gain
            out.append(
                f"{ours}: (a) above 8/0 in {wins}/{len(pairs)} seeds at {ratio:.2f}x its completions -> "
                f"{'pass' if a_ok else 'FAIL'}; (b) gain over 4/0 {ours_gain:+.4f} vs plain SAPO's "
                f"{sapo_gain:+.4f} -> {'pass' if b_ok else 'FAIL'}; headline {'MET' if a_ok and b_ok else 'NOT MET'}"
            )  # fmt: skip
    if regime == "easy" and get("4/0") and get("8/0"):
        for ours in ("4/4 info", "4/4 info adaptive", "4/4 info reuse", "4/4 info adaptive reuse"):
            if not get(ours):
                continue
            d40 = paired(arms[ours], arms["4/0"], "final")
            # round 75: 8/0 has generated as much (run.py evaluates at the start and end only)
            at75 = {r["seed"]: r["curve"][3] for r in arms["8/0"] if len(r["curve"]) > 3}
            d80 = [r["final"] - at75[r["seed"]] for r in arms[ours] if r["seed"] in at75]
            res = []
            for name, d in (("4/0", d40), ("8/0 at round 75", d80)):
                if not d:
                    res.append(f"vs {name}: not evaluated in these runs")
                    continue
                se = st.stdev(d) / len(d) ** 0.5 if len(d) > 1 else 0.0
                ok = st.fmean(d) >= -2 * se
                res.append(f"vs {name} {st.fmean(d):+.4f} (2 s.e. {2 * se:.4f}) {'pass' if ok else 'FAIL'}")
            out.append(f"{ours}: " + "; ".join(res))
    if get("4/4 info reuse ess") and get("4/4 info reuse"):  # rule: docs/sapo.md, "The ESS check"
        d = paired(arms["4/4 info reuse ess"], arms["4/4 info reuse"], "final")
        se = st.stdev(d) / len(d) ** 0.5 if len(d) > 1 else 0.0
        wins = sum(x > 0 for x in d)
        ok = st.fmean(d) > 2 * se and wins >= 4 and len(d) >= 5
        out.append(f"4/4 info reuse ess: final held-out {st.fmean(d):+.4f} vs 4/4 info reuse (2 s.e. {2 * se:.4f}), "
                   f"above in {wins}/{len(d)} seeds -> {'adopt' if ok else 'do not adopt'}")  # fmt: skip
    for base in ("4/4 info", "4/4 info reuse"):
        if not get(base):
            continue
        sd = st.stdev([r["final"] for r in arms[base]]) if len(arms[base]) > 1 else 0.0
        for odd in (f"{base} liar", f"{base} foreign"):
            if get(odd):  # the same honest agents (by index) in both arms: agent 0 starts weak in hetero
                ref = {r["seed"]: r["by_index"] for r in arms[base]}
                d = st.fmean(
                    st.fmean(v - ref[r["seed"]][i] for i, v in r["by_index"].items())
                    for r in arms[odd] if r["seed"] in ref
                )  # fmt: skip
                out.append(f"{odd}: honest agents {d:+.4f} vs {base} (seed s.d. {sd:.4f}) -> "
                           f"{'pass' if abs(d) < sd else 'FAIL'}")  # fmt: skip
    return out


ORDER = ["8/0", "4/0", "4/4 uniform", "4/4 info", "4/4 info adaptive", "8/0 dynamic", "4/4 info liar",
         "4/4 info foreign", "4/4 uniform liar", "4/4 info gate", "4/4 info reuse", "4/4 info srcnorm",
         "4/4 info adaptive reuse", "4/4 info reuse liar", "4/4 info reuse foreign", "4/4 info reuse ess"]  # fmt: skip


def to_target(r: dict[str, Any], target: float) -> float | None:
    """Completions generated by the first evaluation after round 0 whose held-out pass@1 reaches
    `target` (None: never)."""
    for y, x in zip(r["curve"][1:], r["generated_curve"][1:]):
        if y >= target:
            return x
    return None


def target_cell(rs: list[dict], base: list[dict] | None) -> str:
    """Mean completions to the seed's 4/0 final (what training alone reaches with 4 groups a
    step), over the seeds that reached it, and how many did."""
    if not base:
        return "-"
    goal = {r["seed"]: r["final"] for r in base}
    hits = [to_target(r, goal[r["seed"]]) for r in rs if r["seed"] in goal]
    got = [h for h in hits if h is not None]
    return f"{st.fmean(got):,.0f} ({len(got)}/{len(hits)})" if got else f"never (0/{len(hits)})"


def report(runs: list[dict[str, Any]], img: Path | None) -> str:
    by: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        by[r["regime"]][r["arm"]].append(run_numbers(r))
    lines = []
    for regime in ("easy", "sparse", "hetero"):
        if regime not in by:
            continue
        arms = {a: sorted(v, key=lambda r: r["seed"]) for a, v in by[regime].items()}
        lines += [f"\n### {regime}\n",
                  "| arm | seeds | held-out start | held-out final | gain | own reward | completions generated | gain per 1k completions | completions to 4/0's final (seeds reaching it) | batch reward (paper-style) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for arm in [a for a in ORDER if a in arms]:
            rs = arms[arm]
            per_k = [1000 * r["gain"] / r["generated"] for r in rs]
            lines.append(
                f"| {arm} | {len(rs)} | {ms([r['start'] for r in rs])} | {ms([r['final'] for r in rs])} | "
                f"{ms([r['gain'] for r in rs], '+.3f')} | {ms([r['own'] for r in rs])} | "
                f"{st.fmean(r['generated'] for r in rs):,.0f} | {ms(per_k, '+.4f')} | "
                f"{target_cell(rs, arms.get('4/0'))} | {ms([r['batch'] for r in rs])} |"
            )  # fmt: skip
        lines += ["", *[f"- {v}" for v in verdicts(regime, arms)]]
        if img is not None:
            plot(regime, arms, img)
    return "\n".join(lines)


def plot(regime: str, arms: dict[str, list[dict]], img: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for arm in [a for a in ORDER if a in arms]:
        rs = arms[arm]
        n = min(len(r["curve"]) for r in rs)
        x = [st.fmean(r["generated_curve"][i] for r in rs) for i in range(n)]
        y = [st.fmean(r["curve"][i] for r in rs) for i in range(n)]
        ax.plot(x, y, marker="o", ms=3, label=arm, ls="--" if "liar" in arm or "foreign" in arm else "-")
    ax.set_xlabel("completions generated per agent")
    ax.set_ylabel("held-out pass@1 (honest agents, mean of seeds)")
    ax.set_title(f"sharing, {regime} regime (toy, 4 agents, lock step)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    img.mkdir(parents=True, exist_ok=True)
    fig.savefig(img / f"sharing_{regime}.png", dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", action="append", default=[], help="lockstep.py output folder (repeatable)")
    p.add_argument("--results", default=None, help="read a saved compact results file instead")
    p.add_argument("--save", default=None, help="write the compact results here")
    p.add_argument("--img", default=None)
    p.add_argument("--real", default=None, help="a run.py sharing-REGIME results file (report it alone)")
    args = p.parse_args()
    if args.real:
        print(report(from_run_py(Path(args.real)), None))
        return
    runs = json.loads(Path(args.results).read_text())["runs"] if args.results else []
    for out in args.out:
        runs += [compact(json.loads(f.read_text())) for f in sorted(Path(out).glob("*/*.json"))]
    if args.save:
        Path(args.save).write_text(json.dumps({"runs": runs}))
    print(report(runs, Path(args.img) if args.img else None))


if __name__ == "__main__":
    main()
