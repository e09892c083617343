"""Config loading: files, merges, overrides and the errors a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import Config, ConfigError, load_config
from protocol import Identity

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "configs").glob("*.toml"))
PRESETS = sorted((ROOT / "configs" / "algorithms").glob("*.yaml"))


def test_defaults_are_the_embedded_solo_config():
    cfg = load_config()
    assert cfg.model.name == "smollm2-135m-instruct"
    assert cfg.swarm.mode == "solo"
    # `swarmrl run` without --config and `make run` (configs/solo_cpu.yaml) train the same job
    assert cfg == load_config([ROOT / "configs" / "solo_cpu.yaml"])


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_file_parses(path):
    assert isinstance(load_config([path]), Config)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_algorithm_preset_merges_onto_tiny(path):
    cfg = load_config([ROOT / "configs" / "tiny.yaml", path])
    assert cfg.model.name == "tiny"


def test_later_files_and_overrides_win(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("trainer: {lr: 0.001, steps: 7}\n")
    b = tmp_path / "b.toml"
    b.write_text("[trainer]\nlr = 0.002\n")
    cfg = load_config([a, b], ["rollout.group_size=3", "trainer.betas=[0.8, 0.9]"])
    assert cfg.trainer.lr == 0.002 and cfg.trainer.steps == 7
    assert cfg.rollout.group_size == 3 and cfg.trainer.betas == (0.8, 0.9)


def test_unknown_key_names_the_key_and_suggests():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["trainer.lrr=1e-6"])
    msg = str(e.value)
    assert "trainer.lrr" in msg and "did you mean 'lr'" in msg and "micro_batch_size" in msg


def test_bad_value_names_the_key_and_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["rollout.backend=tensorrt"])
    assert "rollout.backend" in str(e.value) and "'transformers'" in str(e.value)
    with pytest.raises(ConfigError, match="trainer.lr"):
        load_config(overrides=["trainer.lr=-1"])


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config([bad])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(overrides=["no-equals-sign"])


def test_overrides_index_into_lists(tmp_path):
    cfg = load_config([ROOT / "configs" / "tiny.yaml"], ["tasks.sources.0.size=17", "tasks.sources.0.options.max_digits=1"])
    assert cfg.tasks.sources[0].size == 17 and cfg.tasks.sources[0].options["max_digits"] == 1
    assert cfg.tasks.sources[0].options["min_terms"] == 2  # siblings kept
    with pytest.raises(ConfigError, match="has no item '3'"):
        load_config([ROOT / "configs" / "tiny.yaml"], ["tasks.sources.3.size=1"])


KEY = Identity.from_seed(bytes(range(32)))
PEER = KEY.peer_id


@pytest.mark.parametrize(
    "address, reason",
    [
        ("garbage", "is not a multiaddr"),
        ("/ip4/999.1.1.1/tcp/4001/p2p/" + PEER, "is not a multiaddr"),
        ("/ip4/1.2.3.4/tcp/99999/p2p/" + PEER, "is not a multiaddr"),
        ("/ip4/1.2.3.4/tcp/4001/p2p/not-a-peer-id", "is not a multiaddr"),
        ("/ip4/1.2.3.4/tcp/4001", "does not end in /p2p/<peer id>"),
        ("/p2p/" + PEER, "names no host and port"),
    ],
)
def test_garbage_bootstrap_address_is_refused_at_load(address, reason):
    # before: accepted, and the node retried it forever while training solo
    with pytest.raises(ConfigError, match="swarm.bootstrap") as e:
        load_config(overrides=["swarm.mode=join", f"swarm.bootstrap={address}"])
    assert reason in str(e.value)


def test_good_bootstrap_addresses_load():
    good = [f"/ip4/1.2.3.4/tcp/4001/p2p/{PEER}", f"/dns4/boot.example.org/tcp/4001/p2p/{PEER}",
            f"/ip6/::1/tcp/4001/p2p/{PEER}"]  # fmt: skip
    assert load_config(overrides=[f"swarm.bootstrap={','.join(good)}"]).swarm.bootstrap == good


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "cannot read"),  # no file
        (b"", "lists no peer"),
        (b"# only a comment\n", "lists no peer"),
        (f"{PEER}\nnot-a-peer\n".encode(), "allow.txt:2: not a peer id"),
        (b"\xff\xfe\x00garbage\n", "allow.txt: 'utf-8' codec"),
    ],
)
def test_bad_allowlist_is_refused_at_load(tmp_path, content, reason):
    allow = tmp_path / "allow.txt"
    if content is not None:
        allow.write_bytes(content)
    with pytest.raises(ConfigError, match="swarm.allowlist") as e:
        load_config(overrides=["swarm.mode=join", f"swarm.allowlist={allow}"])
    assert reason in str(e.value)


def test_allowlist_is_read_with_the_swarm_loader_and_only_in_join_mode(tmp_path):
    allow = tmp_path / "allow.txt"
    other = Identity.from_seed(bytes(32)).public_key.hex()  # the other accepted form: a raw key in hex
    allow.write_text(f"# lab\n{PEER}\n{other}\n")
    cfg = load_config(overrides=["swarm.mode=join", f"swarm.allowlist={allow}"])
    assert cfg.swarm.allowlist == str(allow)
    # a solo run never reads it (a lab config can be inspected or run solo elsewhere)
    assert load_config(overrides=[f"swarm.allowlist={tmp_path / 'missing.txt'}"]).swarm.mode == "solo"
    with pytest.raises(ConfigError, match="swarm.allowlist"):
        load_config(overrides=[f"swarm.allowlist={tmp_path}", "swarm.mode=join"])  # a directory
