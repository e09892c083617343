"""`replay` left at uniform everything reproduces the node as it was before the replay layer.

The expected values were recorded on the commit before `node/replay/` existed (fa91f92), on the
toy harness: the prompts (index x G) each generation call asked for, the loss of each step and a
checksum of the weights after three steps, plain and with dynamic sampling (extra rounds).  One
torch thread: the checksum depends on how matmuls split their sums, and an earlier test may have
changed the process's thread count (`model.threads=0` follows the machine's load).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.toy.adapter import ToyAddition, toy_config, toy_parts  # noqa: E402
from benchmarks.toy.seqmodel import GPTConfig, warm_start  # noqa: E402
from node.node import Node  # noqa: E402

PLAIN = (
    [
        ["272x4", "247x4", "256x4", "15x4"],
        ["361x4", "0x4", "3x4", "369x4"],
        ["368x4", "366x4", "321x4", "12x4"],
    ],
    [0.0, 0.0157, 0.0],
    121.724,
)
DYNAMIC = (
    [
        ["272x4", "247x4", "256x4", "15x4"],
        ["51x4", "359x4", "299x4", "390x4"],
        ["116x4", "385x4", "113x4", "195x4"],
        ["361x4", "0x4", "3x4", "369x4"],
        ["33x4", "18x4", "327x4", "308x4"],
        ["245x4", "378x4", "306x4", "232x4"],
        ["368x4", "366x4", "321x4", "12x4"],
        ["302x4", "130x4", "249x4", "380x4"],
        ["199x4", "231x4", "126x4", "30x4"],
    ],  # fmt: skip
    [-0.0333, 0.0714, 0.0787],
    121.713,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def warm(one_thread):
    tiny = GPTConfig(n_layer=1, d_model=32, n_head=2)
    return warm_start(seed=0, steps=150, batch=64, lr=1e-2, level_weights=(1.0, 1.0, 0.0, 0.0), config=tiny)


def fingerprint(net, overrides: dict, run_dir: Path):
    torch.manual_seed(0)
    net = copy.deepcopy(net)
    parts = toy_parts(net, ToyAddition(0, size=400, level_weights=(1, 1, 1, 1)), 5)
    asked: list[list[str]] = []
    generate = parts.engine.generate

    def recording(requests, group_size, sampling):
        asked.append([f"{r.prompt.prompt_id.split(':')[-1]}x{group_size}" for r in requests])
        return generate(requests, group_size, sampling)

    parts.engine.generate = recording
    base = {"rollout": {"prompts_per_step": 4, "group_size": 4}, "trainer": {"mini_batch_size": 8}}
    node = Node(toy_config(0, base | overrides), run_dir, parts)
    losses = [round(node.train_step()["loss"], 4) for _ in range(3)]
    with torch.no_grad():
        checksum = round(sum(float(p.sum()) for p in net.parameters()), 3)
    return asked, losses, checksum


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ({}, PLAIN),
        ({"replay": {"select": "uniform", "allocate": "uniform", "replay_fraction": 0.0}}, PLAIN),
        ({"algorithm": {"dynamic_sampling": True, "max_gen_rounds": 3}}, DYNAMIC),
    ],
    ids=["plain", "explicit-uniform", "dynamic-sampling"],
)
def test_uniform_replay_reproduces_the_node_before_the_layer(warm, tmp_path, overrides, expected):
    assert fingerprint(warm, overrides, tmp_path) == expected
