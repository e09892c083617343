"""The `swarmrl` argument parser: every command, flag and help text.  Imports nothing heavy, so
`--help` is instant; node/cli.py runs the commands."""

from __future__ import annotations

import argparse

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
