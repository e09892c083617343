"""`swarmrl export`: a run's checkpoint becomes a folder `from_pretrained` loads as-is, with the
same logits as the node's model; the newest good checkpoint is picked without touching the run;
a push that cannot happen fails at once, naming the repo."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch

from node.cli import main
from node.export import ExportError, export
from node.node import Node
from tests.conftest import ROOT

TEXT = "Calculate 7 + 5. <answer>12</answer>"


def logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits.float()


@pytest.fixture(scope="module")
def trained_once(model_cache, tmp_path_factory):
    from node.config import load_config

    run_dir = tmp_path_factory.mktemp("export") / "run"
    overrides = [f"model.cache_dir={model_cache}", f"logging.run_dir={run_dir}", "trainer.lr=1e-2",
                 "checkpoint.keep=3", "checkpoint.every=1"]  # fmt: skip
    node = Node(load_config([ROOT / "configs" / "tiny.yaml"], overrides))
    node.run(2)
    return node, run_dir


@pytest.fixture
def trained(trained_once, tmp_path):
    """A full fine-tuning run of 2 steps (a checkpoint after each), copied for this test, and its node."""
    node, run_dir = trained_once
    shutil.copytree(run_dir, tmp_path / "run")
    return node, str(tmp_path / "run")


def test_exported_model_and_tokenizer_load_and_match_the_node(trained, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    node, run_dir = trained
    assert main(["export", run_dir, str(tmp_path / "out")]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tok(TEXT)["input_ids"] == node.policy.tokenizer(TEXT)["input_ids"]
    assert (
        tok.chat_template == node.policy.tokenizer.chat_template
        and tok.pad_token == node.policy.tokenizer.pad_token
    )
    assert model.dtype == torch.float32  # the dtype the run trained in
    assert torch.allclose(logits(model, tok), logits(node.policy.model, tok), atol=1e-5, rtol=0)
    assert (tmp_path / "out" / "generation_config.json").is_file()
    assert "step 2" in (tmp_path / "out" / "README.md").read_text()


def test_export_picks_the_newest_good_checkpoint_and_leaves_the_run_alone(trained, tmp_path):
    _, run_dir = trained
    ckpts = Path(run_dir) / "checkpoints"
    newest = ckpts / "step_00000002"
    (newest / "optimizer.pt").write_bytes(b"garbage")  # fails its checksum
    before = sorted(p.name for p in ckpts.iterdir())
    done = export(run_dir, tmp_path / "out")
    assert done.step == 1 and done.checkpoint.name == "step_00000001"
    assert [p for p, _ in done.skipped] == [newest]
    assert sorted(p.name for p in ckpts.iterdir()) == before  # nothing renamed: a live node may be writing
    assert export(run_dir, tmp_path / "one", checkpoint=ckpts / "step_00000001").step == 1


def test_existing_output_is_refused_unless_forced(trained, tmp_path, capsys):
    _, run_dir = trained
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", run_dir, str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").is_file()
    assert main(["export", run_dir, str(out), "--force"]) == 0
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_adapter_export_of_a_full_run_is_refused(trained, tmp_path):
    _, run_dir = trained
    with pytest.raises(ExportError, match="needs a LoRA run"):
        export(run_dir, tmp_path / "out", mode="adapter")


def test_dtype_is_applied(trained, tmp_path):
    from transformers import AutoModelForCausalLM

    _, run_dir = trained
    out = tmp_path / "not" / "yet" / "out"  # missing parents are created
    assert main(["export", run_dir, str(out), "--dtype", "bfloat16"]) == 0
    assert AutoModelForCausalLM.from_pretrained(out, dtype="auto").dtype == torch.bfloat16


def test_push_offline_fails_at_once_naming_the_repo(trained, tmp_path, capsys, monkeypatch):
    _, run_dir = trained
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    assert main(["export", run_dir, str(tmp_path / "out"), "--push-to-hub", "someone/tiny-grpo"]) == 2
    assert time.monotonic() - t0 < 5  # before any model loads, no retries
    err = capsys.readouterr().err
    assert "someone/tiny-grpo" in err and "offline" in err
    assert not (tmp_path / "out").exists()


def test_push_with_no_route_to_the_hub_fails_at_once_naming_the_repo(trained, tmp_path, capsys, monkeypatch):
    _, run_dir = trained
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    t0 = time.monotonic()
    assert main(["export", run_dir, str(tmp_path / "out"), "--push-to-hub", "someone/tiny-grpo"]) == 2
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err
    assert "someone/tiny-grpo" in err and "cannot reach" in err


def test_a_run_without_checkpoints_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "out")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "out")]) == 2
    assert "no such run directory" in capsys.readouterr().err
