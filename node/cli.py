"""`swarmrl` command line.  Parses and validates before importing torch, so `--help` and
config errors are instant."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from node.preflight import (
    UsageError,
    check_before_loading,
    check_folder,
    check_identity,
    check_port_free,
    check_run_dir,
)

EPILOG = """examples:
  swarmrl run                                   train SmolLM2-135M-Instruct solo on the default task
  swarmrl run --config configs/tiny.yaml trainer.steps=5
  swarmrl run --config configs/solo_cpu.yaml --config configs/algorithms/dapo.yaml
  swarmrl run --resume logging.run_dir=runs/default      continue where it stopped
  swarmrl eval runs/default                     held-out accuracy before and after training
  swarmrl config show --config configs/tiny.yaml
  swarmrl run -c tiny trainer.steps=5           a preset by name (`swarmrl config presets` lists them)
  swarmrl config keys                           every config key: type, default, description
  swarmrl plot runs/default                     write runs/default/curves.png
  swarmrl export runs/default out/model         a folder AutoModelForCausalLM.from_pretrained loads
  swarmrl run swarm.mode=join swarm.bootstrap=/ip4/1.2.3.4/tcp/4001/p2p/12D3KooW...   join a swarm
  swarmrl lab up --nodes 3                      a private swarm of 3 nodes on this machine
  swarmrl status runs/default                   step, reward, peers and rejections of a running node
"""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", "-c", action="append", default=[], metavar="FILE",
        help="YAML or TOML config, or a preset name (`swarmrl config presets`); repeat to merge several "
        "(later files win). Default: built-in solo CPU config",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="dotted overrides applied after the files, e.g. trainer.lr=1e-6 rollout.group_size=4",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swarmrl",
        description="A node for decentralized, swarm-style RL post-training of language models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="train a policy, solo or in a swarm (swarm.mode=join)", description=(
        "Train: select prompts, generate groups, score them with the task's verifier, compute "
        "advantages, update the policy, log and checkpoint. With swarm.mode=join the node also "
        "publishes its groups and trains on up to swarm.external_groups admitted peer groups per "
        "step. Ctrl-C (or SIGTERM) finishes the step, saves and exits."))
    _add_config_args(run)
    run.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in logging.run_dir")
    run.add_argument("--steps", type=int, help="stop at this total step count (default trainer.steps)")
    run.add_argument("--eval", action="store_true", help="afterwards, compare held-out accuracy before and after")
    run.add_argument("--gpus", "--nproc", type=int, metavar="N", help="one node on N GPUs (N processes on CPU): "
                     "re-launch through torchrun (see README, 'Several GPUs on one node')")

    ev = sub.add_parser("eval", help="held-out accuracy of a model, a checkpoint or a run", description=(
        "Greedy-decode held-out prompts and report accuracy (the correctness reward). Given a run "
        "directory, reports the base model and the run's latest checkpoint side by side."))
    ev.add_argument("target", nargs="?", help="run directory or checkpoint directory (default: the base model only)")
    _add_config_args(ev)
    ev.add_argument("-n", type=int, help="number of held-out prompts (default tasks.eval_size)")

    cfg = sub.add_parser("config", help="inspect configs")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION")
    show = cfg_sub.add_parser("show", help="print the resolved config (files + overrides + defaults)")
    _add_config_args(show)
    cfg_sub.add_parser("presets", help="list the configs shipped with swarmrl (use one with -c NAME)")
    keys = cfg_sub.add_parser("keys", help="every config key with its type, default and description")
    keys.add_argument("--markdown", action="store_true", help="as docs/config.md (make config-docs)")

    keygen = sub.add_parser("keygen", help="create an Ed25519 node key (0600) and print its peer id", description=(
        "Generate the node's identity: an Ed25519 private key written with mode 0600. The peer id "
        "(libp2p format, 12D3KooW...) is derived from its public key; give it to a lab's allowlist."))
    keygen.add_argument("--out", default="~/.config/swarmrl/node.key", help="key file (default %(default)s)")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing key file")

    boot = sub.add_parser("bootstrap", help="run a discovery/relay node (no model) and print its address", description=(
        "Start a lightweight bootstrap node for a swarm: no model, no training. It prints the "
        "multiaddr(s) that peers put in their bootstrap list, and serves until Ctrl-C."))
    boot.add_argument("--backend", default="hivemind", choices=["hivemind", "libp2p"], help="P2P engine (default %(default)s)")
    boot.add_argument("--host", default="0.0.0.0", help="listen address (default %(default)s)")
    boot.add_argument("--port", type=int, default=0, help="listen port; 0 = any free port")
    boot.add_argument("--swarm-id", default="public", help="swarm to serve (scopes every topic and key)")
    boot.add_argument("--identity", help="key file from `swarmrl keygen`, for a stable address across restarts")
    boot.add_argument("--upstream", nargs="*", default=[], help="other bootstrap nodes to join")
    boot.add_argument("--allowlist", help="private swarm: file of allowed peer ids / public keys")
    boot.add_argument("--address-file", help="also write the listen multiaddrs here, one per line, once up")

    st = sub.add_parser("status", help="show a running node's step, reward, peers and rejections", description=(
        "Read a node's status: its RUN_DIR/status.json (written after every step) or, with a URL, its "
        "metrics endpoint (logging.metrics_port). /metrics on that endpoint serves Prometheus text."))
    st.add_argument("target", nargs="?", default="runs/default",
                    help="run directory, status.json, or http://HOST:PORT (default %(default)s)")
    st.add_argument("--json", action="store_true", help="print the raw JSON record")

    lab = sub.add_parser("lab", help="a private swarm of N nodes on this machine (up / down / status)",
                         formatter_class=argparse.RawDescriptionHelpFormatter, description=(
        "Run a private lab swarm here: generate keys and an allowlist, start a bootstrap node and N\n"
        "nodes that share rollouts, and show a live table (step, reward, groups sent/received/\n"
        "admitted/used, the score peers give each node). Ctrl-C or `lab down` stops exactly the\n"
        "processes the lab started; nodes save a checkpoint first, and `lab up` again resumes them."),
        epilog="examples:\n  swarmrl lab up --nodes 3\n  swarmrl lab up --nodes 2 --config configs/tiny.yaml "
        "--detach trainer.steps=50\n  swarmrl lab status\n  swarmrl lab down")
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="ACTION")
    lab_up = lab_sub.add_parser("up", help="start the lab (Ctrl-C stops it; --detach returns at once)")
    _add_config_args(lab_up)
    lab_up.add_argument("--nodes", "-n", type=int, default=3, help="nodes to start (default %(default)s)")
    lab_up.add_argument("--backend", default="hivemind", choices=["hivemind", "libp2p"], help="P2P engine")
    lab_up.add_argument("--detach", "-d", action="store_true", help="start and return; stop later with `lab down`")
    lab_up.add_argument("--node", nargs=2, action="append", default=[], metavar=("K", "KEY=VALUE"),
                        help="an override for node K only (repeatable), e.g. a task mix per node: "
                        "--node 2 tasks.sources.0.weight=0.2")  # fmt: skip
    for name, text in (("down", "stop every process the lab started"), ("status", "print the lab's table once")):
        action = lab_sub.add_parser(name, help=text)
        action.add_argument("--dir", default="runs/lab", help="lab directory (default %(default)s)")
    lab_up.add_argument("--dir", default="runs/lab", help="lab directory (default %(default)s)")

    plot = sub.add_parser("plot", help="write a PNG of the reward and other curves of a run")
    plot.add_argument("run_dir", help="run directory holding metrics.jsonl")
    plot.add_argument("--out", help="output PNG (default RUN_DIR/curves.png)")

    exp = sub.add_parser("export", help="write a run's checkpoint as a Hugging Face model folder", description=(
        "Write the newest good checkpoint of RUN_DIR (or --checkpoint) to OUT as a folder that "
        "AutoModelForCausalLM.from_pretrained and AutoTokenizer.from_pretrained load as-is. A LoRA run is "
        "merged into full weights (--merge, the default) or kept as a peft adapter (--adapter)."))
    exp.add_argument("run_dir", help="run directory (logging.run_dir), or one checkpoint directory")
    exp.add_argument("out", help="output folder (must not exist or be empty, unless --force)")
    exp.add_argument("--checkpoint", help="export this checkpoint directory instead of the newest good one")
    exp_mode = exp.add_mutually_exclusive_group()
    exp_mode.add_argument("--merge", dest="mode", action="store_const", const="merge", default="merge",
                          help="LoRA: merge the adapters into the weights (default)")
    exp_mode.add_argument("--adapter", dest="mode", action="store_const", const="adapter",
                          help="LoRA: write only the peft adapter (adapter_config.json + adapter_model.safetensors)")
    exp.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                     help="weights dtype (default: the dtype the run trained in)")
    exp.add_argument("--push-to-hub", metavar="REPO", help="then upload OUT to this Hugging Face repo (needs a token)")
    exp.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    exp.add_argument("--force", action="store_true", help="replace OUT if it exists")
    return parser


def _load(args):
    from node.config import load_config

    files = args.config
    if not files:
        return load_config([], args.overrides)
    return load_config(files, args.overrides)


def cmd_run(args) -> int:
    if args.gpus and args.gpus > 1 and "LOCAL_RANK" not in os.environ:  # not yet under torchrun
        from node.distributed import relaunch

        return relaunch(args, args.gpus)
    cfg = _load(args)
    check_run_dir(cfg)
    check_identity(cfg)
    check_before_loading(cfg)
    from node import distributed

    if distributed.launched():  # under torchrun: rank 0 runs the node, the other ranks serve it
        return distributed.run_ranks(cfg, lambda: _run(args, cfg))
    return _run(args, cfg)


def _run(args, cfg) -> int:
    from node import distributed
    from node.trackers import requested

    trackers = requested(cfg.logging)  # a missing tracker package is warned about before the model loads
    from node.metrics import MetricsLog, Progress, sample_rows
    from node.node import Node
    from node.status import StatusBoard

    node = Node(cfg)
    steps = args.steps or cfg.trainer.steps
    if args.resume:
        if node.resume():
            distributed.share_checkpoint(node)
            print(f"[node] resumed at step {node.step} from {node.ckpt_dir}", flush=True)
            for path in node.checkpoints_skipped:
                print(f"[node] warning: skipped corrupt checkpoint {path} (set aside as corrupt-*)", flush=True)
        else:
            print(f"[node] no checkpoint in {node.ckpt_dir}; starting fresh", flush=True)
    elif (node.ckpt_dir).is_dir() and any(node.ckpt_dir.iterdir()):
        print(f"error: {node.ckpt_dir} already holds checkpoints; pass --resume to continue, or "
              "choose another logging.run_dir", file=sys.stderr)
        return 2
    node.run_dir.mkdir(parents=True, exist_ok=True)
    from node.trackers import open_trackers

    tracker_set = open_trackers(trackers, cfg.logging, node.run_dir, cfg.model_dump(mode="json"), args.resume)
    log = MetricsLog(node.run_dir, resume_step=node.step if args.resume else None, trackers=tracker_set)
    progress = Progress(steps, node.step, cfg.logging.progress)
    board = StatusBoard(node.run_dir, cfg.logging.status_file, cfg.logging.metrics_port, cfg.logging.metrics_host)
    if node.sharing is not None:
        print(f"[node] joining swarm {cfg.swarm.swarm_id!r} ({cfg.swarm.backend}) as {node.sharing.link.peer_id}; "
              f"I={cfg.rollout.prompts_per_step} local + J={cfg.swarm.external_groups} peer groups per step", flush=True)
        if not cfg.swarm.bootstrap:
            print("[node] swarm.bootstrap is empty: this node starts a new swarm and waits for peers to dial it; "
                  "its addresses appear in `swarmrl status` (others join with swarm.bootstrap=<address>)", flush=True)
    board.update(node.status({}, steps))

    def on_step(step, metrics):
        log.write(step, metrics)
        if cfg.logging.samples_every and step % cfg.logging.samples_every == 0:
            log.write_samples(step, sample_rows(node.last_groups, cfg.logging.samples_rows))
        progress.update(step, metrics)
        board.update(node.status(metrics, steps))

    try:
        node.run(steps, on_step)
    finally:
        distributed.release()
        node.close()
        board.close()
        progress.close()
        log.close()
    print(f"[node] step {node.step}: checkpoint in {node.ckpt_dir}, metrics in {log.path}", flush=True)
    if args.eval and node.step < steps:  # `run` returns early only on Ctrl-C / SIGTERM
        print(f"[node] interrupted at step {node.step}/{steps}: skipping the evaluation "
              f"(run `swarmrl eval {cfg.logging.run_dir}` for it)", flush=True)
    elif args.eval:
        from node.evaluate import evaluate_target

        del node
        evaluate_target(cfg, str(cfg.logging.run_dir), cfg.tasks.eval_size)
    return 0


def cmd_eval(args) -> int:
    from node.evaluate import evaluate_target

    if args.target and "=" in args.target and not Path(args.target).exists():
        args.overrides.insert(0, args.target)  # `swarmrl eval key=value ...`: no target given
        args.target = None
    cfg = _load(args)
    if args.target and not args.config and (Path(args.target) / "config.yaml").is_file():
        from node.config import load_config

        cfg = load_config([Path(args.target) / "config.yaml"], args.overrides)
    check_before_loading(cfg)
    evaluate_target(cfg, args.target, args.n or cfg.tasks.eval_size)
    return 0


def cmd_config(args) -> int:
    if args.config_command == "presets":
        from node.presets import list_presets, presets_dir

        presets = list_presets()
        width = max((len(p.name) for p in presets), default=0)
        print("\n".join(f"{p.name:<{width}}  {p.summary}" for p in presets))
        print(f"\n{len(presets)} presets in {presets_dir()}; use one with `-c NAME` (e.g. swarmrl run -c tiny)")
        return 0
    if args.config_command == "keys":
        from node import config_keys

        print(config_keys.markdown() if args.markdown else config_keys.text(), end="")
        return 0
    if args.config_command != "show":
        print("usage: swarmrl config {show,presets,keys} (see swarmrl config --help)", file=sys.stderr)
        return 2
    from node.config import dump_config

    print(dump_config(_load(args)), end="")
    return 0


def cmd_plot(args) -> int:
    from node.metrics import read_metrics
    from node.plot import plot_run, summary

    out = plot_run(Path(args.run_dir), Path(args.out) if args.out else None)
    print(summary(read_metrics(Path(args.run_dir))))
    print(f"wrote {out}")
    return 0


def cmd_export(args) -> int:
    from node.export import ExportError, export

    try:
        done = export(args.run_dir, args.out, args.checkpoint, args.mode, args.dtype, args.push_to_hub,
                      args.private, args.force)  # fmt: skip
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, why in done.skipped:
        print(f"warning: skipped corrupt checkpoint {path}: {why}", file=sys.stderr)
    what = "peft adapter" if done.mode == "adapter" else f"model ({done.dtype})"
    print(f"wrote {args.out}: {what} from {done.checkpoint} (step {done.step})")
    if done.url:
        print(f"pushed to {done.url}")
    return 0


def cmd_bootstrap(args) -> int:
    import logging

    from protocol.identity import IdentityError
    from swarm.bootstrap import run_bootstrap
    from swarm.transport import TransportError

    check_port_free(args.host, args.port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        graceful = run_bootstrap(
            backend=args.backend,
            host=args.host,
            port=args.port,
            swarm_id=args.swarm_id,
            identity_path=args.identity,
            upstream=args.upstream,
            allowlist_file=args.allowlist,
            address_file=args.address_file,
        )
    except IdentityError as e:
        raise UsageError(f"--identity: {e}") from None
    except TransportError as e:
        raise UsageError(f"bootstrap node did not start: {e}") from None
    return 0 if graceful else 1  # 1: the stop had to kill p2pd (the log says so)


def cmd_status(args) -> int:
    import json

    from node.status import exit_reason, format_status, read_status

    try:
        status = read_status(args.target)
    except OSError as e:
        print(f"error: cannot read the status of {args.target}: {e}", file=sys.stderr)
        return 2
    served = args.target.startswith(("http://", "https://"))  # an answering endpoint is a live node
    print(json.dumps(status, indent=1) if args.json else format_status(status, None if served else exit_reason(status)))
    return 0


def cmd_lab(args) -> int:
    from node import lab

    if args.lab_command is None:  # `swarmrl lab` alone: no --dir either
        print("usage: swarmrl lab {up,down,status} [--dir DIR] (see swarmrl lab --help)", file=sys.stderr)
        return 2
    lab_dir = Path(args.dir)
    if args.lab_command == "down":
        report = lab.down(lab_dir)
        print("\n".join(report) if report else f"nothing running in {lab_dir}")
        return 0
    if args.lab_command == "status":
        print(lab.table(lab.rows(lab_dir)))
        return 0
    from node.config import load_config

    per_node: dict[int, list[str]] = {}
    for k, override in args.node:
        if not k.isdigit() or not 1 <= int(k) <= args.nodes:
            raise UsageError(f"--node {k}: K must be a node number from 1 to {args.nodes}")
        per_node.setdefault(int(k), []).append(override)
    for k in sorted(per_node) or [0]:  # a typo fails here, not in N processes
        check_before_loading(load_config(args.config, args.overrides + per_node.get(k, [])))
    try:
        state = lab.up(lab_dir, args.nodes, args.config, args.overrides, args.backend, per_node=per_node)
    except lab.LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"lab {state['swarm_id']}: bootstrap + {args.nodes} nodes; logs in {lab_dir / 'logs'}", flush=True)
    if args.detach:
        print(f"running in the background: `swarmrl lab status --dir {lab_dir}`, `swarmrl lab down --dir {lab_dir}`")
        return 0
    try:
        watch_lab(lab_dir)
    except KeyboardInterrupt:
        print("\nstopping the lab (nodes save a checkpoint first) ...", flush=True)
    finally:
        print("\n".join(lab.down(lab_dir)))
    return 0


def watch_lab(lab_dir: Path, period: float = 2.0) -> None:
    """Redraw the lab table until every node has exited."""
    from node import lab

    live = sys.stdout.isatty()
    last = 0.0
    while True:
        rows = lab.rows(lab_dir)
        text = lab.table(rows)
        if live:
            print("\033[H\033[J" + text + "\n\nCtrl-C stops the lab", flush=True)
        elif time.monotonic() - last > 15:
            print(text + "\n", flush=True)
            last = time.monotonic()
        if rows and not any(r["running"] for r in rows):
            print(text)
            return
        time.sleep(period)


def cmd_keygen(args) -> int:
    from protocol.identity import IdentityError, generate_key_file

    path = Path(args.out).expanduser()
    check_folder("--out", path.parent)
    try:
        peer_id = generate_key_file(path, overwrite=args.force)
    except (IdentityError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # --out is a folder, the folder is read-only, ...
        print(f"error: --out: cannot write {path}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"wrote {path}\npeer id: {peer_id}")
    return 0


COMMANDS = {"run": cmd_run, "eval": cmd_eval, "config": cmd_config, "plot": cmd_plot, "keygen": cmd_keygen,
            "bootstrap": cmd_bootstrap, "status": cmd_status, "lab": cmd_lab}
COMMANDS["export"] = cmd_export


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # argparse cannot take positionals after options (`eval RUN -c F key=value`): collect the
    # leftover KEY=VALUE words as overrides, and refuse anything else.
    args, extra = parser.parse_known_args(argv)
    stray = [w for w in extra if "=" not in w or w.startswith("-")]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides.extend(extra)
    if args.command is None:
        parser.print_help()
        return 0
    from node.config import ConfigError

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from node.checkpoint import CheckpointError
        from node.policy import PolicyLoadError

        if isinstance(e, (CheckpointError, PolicyLoadError)):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
