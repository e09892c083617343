"""`swarmrl` command line: the commands (the parser is node/cli_parser.py).  Parses and validates
before importing torch, so `--help` and config errors are instant."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from node.cli_parser import build_parser
from node.preflight import (
    UsageError,
    check_before_loading,
    check_folder,
    check_identity,
    check_port_free,
    check_run_dir,
)


def _load(args):
    from node.config import load_config

    files = args.config
    if not files:
        return load_config([], args.overrides)
    return load_config(files, args.overrides)


def cmd_run(args) -> int:
    cfg = _load(args)  # a bad config fails here, before any rank starts
    if args.gpus and args.gpus > 1 and "LOCAL_RANK" not in os.environ:  # not yet under torchrun
        from node.launch import relaunch, unsupported

        problem = unsupported(cfg, args.gpus)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        return relaunch(args, args.gpus, Path(cfg.logging.run_dir).expanduser())
    check_run_dir(cfg)
    check_identity(cfg)
    check_before_loading(cfg)
    from node import distributed

    if distributed.launched():  # under torchrun: rank 0 runs the node, the other ranks serve it
        from node.launch import run_ranks

        return run_ranks(cfg, lambda: _run(args, cfg))
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
