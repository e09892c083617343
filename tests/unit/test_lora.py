"""LoRA (`model.lora.enabled`): a step moves only the adapters; checkpoints keep only them and
resume bit for bit; the engine generates with them; the KL reference is the base with them off;
a LoRA peer and a full fine-tuning peer share groups; export merges them or keeps the adapter."""

from __future__ import annotations

import sys

import pytest
import torch

from node import checkpoint, lora
from node.checkpoint import IncompatibleCheckpoint
from node.node import Node
from node.policy import PolicyLoadError, load_policy

LORA = ("model.lora.enabled=true", "model.lora.r=4", "trainer.lr=1e-2")


def state(node: Node) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in node.policy.model.state_dict().items()}


def train_until_moved(node: Node, tries: int = 6) -> None:
    """The policy moves only after a step with non-zero advantages."""
    for _ in range(tries):
        if node.train_step()["zero_var_groups"] < 1.0:
            return
    pytest.fail(f"no reward variance in {tries} steps; the test cannot check an update")


def test_a_lora_step_changes_only_the_adapters(tiny_config):
    node = Node(tiny_config(*LORA))
    model = node.policy.model
    assert lora.is_lora(model)
    adapters = lora.trainable_names(model)
    assert adapters and all(".lora_A." in n or ".lora_B." in n for n in adapters)
    n_opt = sum(len(g["params"]) for g in node.trainer.optimizer.param_groups)
    assert n_opt == len(adapters)  # AdamW holds state for the adapters alone
    before = state(node)
    train_until_moved(node)
    after = state(node)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= adapters
    lora_b = {n for n in adapters if ".lora_B." in n}
    assert lora_b <= changed  # every B started at 0 and moved


def test_step_zero_is_the_base_and_the_reference_is_the_base_with_adapters_off(tiny_config):
    node = Node(tiny_config(*LORA, "algorithm.kl_coef=0.1"))
    ref = node.trainer.ref_model
    assert isinstance(ref, lora.BaseView) and ref.model is node.policy.model  # no second copy
    assert not any(p.requires_grad for p in ref.parameters())
    base = load_policy(
        node.cfg.model.model_copy(update={"lora": node.cfg.model.lora.model_copy(update={"enabled": False})})
    )
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        want = base.model(input_ids=ids).logits
        assert torch.allclose(node.policy.model(input_ids=ids).logits, want, atol=1e-6)  # B = 0
    train_until_moved(node)
    with torch.no_grad():
        assert not torch.allclose(node.policy.model(input_ids=ids).logits, want, atol=1e-4)
        assert torch.allclose(ref(input_ids=ids).logits, want, atol=1e-6)  # still the base
    assert node.train_step()["kl"] > 1e-8


def test_the_engine_generates_with_the_adapters(tiny_config):
    node = Node(tiny_config(*LORA, "model.lora.alpha=64"))
    with torch.no_grad():  # adapters far from 0, so that on and off differ clearly
        for name, p in node.policy.model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.5)
    assert node.engine.model is node.policy.model
    prompt = node.sampler.tasks[0].prompt(0)
    (group,) = node.engine.generate(node.renderer.requests([prompt]), 2, node.sampling)
    sampled = [c.behavior_logprobs for c in group.completions]
    adapted = node.trainer.policy_logprobs(list(group.completions))
    base = node.trainer._logprobs(lora.BaseView(node.policy.model), list(group.completions))
    for s, a, b in zip(sampled, adapted, base):
        assert torch.allclose(torch.tensor(s), torch.tensor(a), atol=1e-4)
        assert not torch.allclose(torch.tensor(s), torch.tensor(b), atol=1e-2)


def test_checkpoint_holds_only_the_adapters_and_resume_is_bit_for_bit(tiny_config, tmp_path):
    straight = Node(tiny_config(*LORA, f"logging.run_dir={tmp_path / 'a'}"))
    straight.run(3)
    interrupted = Node(tiny_config(*LORA, f"logging.run_dir={tmp_path / 'b'}"))
    interrupted.run(2)
    saved = checkpoint.latest(interrupted.ckpt_dir)
    from safetensors.torch import load_file

    assert set(load_file(saved / "model.safetensors")) == lora.trainable_names(interrupted.policy.model)
    resumed = Node(tiny_config(*LORA, f"logging.run_dir={tmp_path / 'b'}"))
    assert resumed.resume() and resumed.step == 2
    resumed.run(3)
    a, b = state(straight), state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    opt_a, opt_b = (
        straight.trainer.optimizer.state_dict()["state"],
        resumed.trainer.optimizer.state_dict()["state"],
    )
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)


def test_a_checkpoint_is_refused_by_a_model_it_does_not_fit(tiny_config, tmp_path):
    node = Node(tiny_config(*LORA))
    path = node.save()
    for overrides, why in [
        (("trainer.lr=1e-2",), "trained with LoRA r=4"),  # full fine-tuning model
        ((*LORA[:1], "model.lora.r=8"), "LoRA r=4"),  # another rank
        ((*LORA, "model.tiny.init_seed=7"), "another base model"),  # same shapes, other weights
    ]:
        other = Node(tiny_config(*overrides, f"logging.run_dir={tmp_path / 'x'}"))
        with pytest.raises(IncompatibleCheckpoint, match=why):
            other.resume(path)
    full = Node(tiny_config(f"logging.run_dir={tmp_path / 'full'}"))
    with pytest.raises(IncompatibleCheckpoint, match="full fine-tuning"):
        Node(tiny_config(*LORA, f"logging.run_dir={tmp_path / 'y'}")).resume(full.save())


def test_without_peft_the_error_names_it_before_loading(tiny_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    with pytest.raises(PolicyLoadError, match="needs the peft package"):
        load_policy(tiny_config(*LORA).model)


def test_lora_and_full_peers_share_groups(tiny_config, tmp_path, monkeypatch):
    """Nothing on the wire changes: a LoRA node and a full fine-tuning node train on each other's
    groups (a group is admitted only with reward variance, so each side steps until it sent some)."""
    import node.swarm_link
    from tests.unit.fake_link import FakeLink

    monkeypatch.setattr(node.swarm_link, "SwarmLink", FakeLink)
    join = (
        "swarm.mode=join",
        "swarm.external_groups=2",
        "swarm.peer_logprobs=reuse",
        "rollout.temperature=1.5",
    )
    a = Node(tiny_config(*join, *LORA, f"logging.run_dir={tmp_path / 'a'}"))
    b = Node(tiny_config(*join, "trainer.lr=1e-2", f"logging.run_dir={tmp_path / 'b'}"))
    try:
        assert a.sharing.tok_hash == b.sharing.tok_hash
        for sender, receiver in ((a, b), (b, a)):
            for _ in range(8):
                sender.train_step()
                receiver.sharing.link.inbox = list(sender.sharing.link.sent)
                if receiver.train_step()["swarm/external_groups"] > 0:
                    break
            else:
                pytest.fail("no group with reward variance in 8 steps; the test cannot check an exchange")
        assert a.sharing.link.published[0].model_id == b.sharing.link.published[0].model_id == "tiny"
    finally:
        a.close()
        b.close()


@pytest.fixture
def lora_run(tiny_config):
    node = Node(tiny_config(*LORA, "model.lora.alpha=64"))
    train_until_moved(node)
    node.save()
    return node


def test_export_merge_loads_and_matches(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from node.cli import main

    assert main(["export", str(lora_run.run_dir), str(tmp_path / "out")]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert not lora.is_lora(model) and not (tmp_path / "out" / "adapter_config.json").exists()
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    ids = tok("Calculate 7 + 5.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        got, want = model.eval()(input_ids=ids).logits, lora_run.policy.model.eval()(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5, rtol=0)


def test_export_adapter_loads_with_peft_and_matches(lora_run, tmp_path):
    from peft import AutoPeftModelForCausalLM

    from node.cli import main

    assert main(["export", str(lora_run.run_dir), str(tmp_path / "out"), "--adapter"]) == 0
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "out" / "model.safetensors").exists()
    model = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "out")  # base from adapter_config.json
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        got, want = model.eval()(input_ids=ids).logits, lora_run.policy.model.eval()(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
