"""User code named in the config (node/plugins.py): a reward, a task and a verifier loaded from
a temporary file, entry points, errors that name the key, and the chat-template override."""

from __future__ import annotations

import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest

from node.cli import main
from node.config import ConfigError, load_config
from node.plugins import PluginError, anchor_paths, load
from node.tasks import build_tasks

PLUGIN = '''
from node.records import Prompt

def brevity(s):
    """1 for an empty completion, 0 at the length cap."""
    return 1.0 - s.num_tokens / s.max_tokens

class Doubling:
    """Task: "Double N." -> 2N, scored by exact match."""
    def __init__(self, n=20):
        self.name = "doubling"
        self._rows = [Prompt(f"doubling:{i}", "doubling", f"Double {i}.", str(2 * i)) for i in range(n)]
    def __len__(self):
        return len(self._rows) - 4
    def prompt(self, index):
        return self._rows[index]
    def lookup(self, question):
        return next((p for p in self._rows[:-4] if p.question == question), None)
    def heldout(self, n):
        return self._rows[-4:][:n]
    def score(self, prompt, answer):
        return float(answer == prompt.answer)

def is_even(prompt, answer):
    return float(answer is not None and answer.isdigit() and int(answer) % 2 == 0)
'''


@pytest.fixture
def plugin_dir(tmp_path):
    """A folder with the plugin file and a config that names it by a relative path."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "my_plugins.py").write_text(PLUGIN)
    (folder / "my.yaml").write_text(textwrap.dedent("""\
        tasks:
          sources:
            - {type: plugin, plugin: my_plugins.py:Doubling, options: {n: 30}}
          reward_plugins: {brevity: my_plugins.py:brevity}
          rewards: {correctness: 1.0, brevity: 0.5}
        """))  # fmt: skip
    return folder


def test_relative_plugin_path_is_read_from_the_config_folder_whatever_the_cwd(
    plugin_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # not the config's folder
    cfg = load_config([plugin_dir / "my.yaml"])
    assert cfg.tasks.reward_plugins["brevity"] == f"{plugin_dir / 'my_plugins.py'}:brevity"
    assert cfg.tasks.sources[0].plugin == f"{plugin_dir / 'my_plugins.py'}:Doubling"
    # `lab up` hands its nodes the same config path from the same working directory; the
    # resolved, absolute spec is what RUN_DIR/config.yaml records for `eval`
    monkeypatch.chdir(plugin_dir)
    assert load_config(["my.yaml"]).tasks == cfg.tasks


def test_relative_path_in_an_override_is_read_from_the_cwd(plugin_dir, monkeypatch):
    monkeypatch.chdir(plugin_dir)
    cfg = load_config([], ["tasks.reward_plugins.brevity=my_plugins.py:brevity", "tasks.rewards.brevity=0.1"])
    assert cfg.tasks.reward_plugins["brevity"] == "my_plugins.py:brevity"
    build_tasks(cfg.tasks)  # loads it from the cwd


def test_custom_task_and_reward_train_one_step(plugin_dir, tiny_config):
    from node.node import Node

    cfg = tiny_config(files=(str(plugin_dir / "my.yaml"),))
    node = Node(cfg)
    assert list(node.tasks) == ["doubling"] and len(node.tasks["doubling"]) == 26
    seen = []
    node.run(1, lambda step, metrics: seen.append(metrics))
    assert node.step == 1
    assert 0.0 <= seen[0]["reward/brevity"] <= 1.0 and "reward/correctness" in seen[0]


def test_verifier_plugin_scores_a_jsonl_source(tmp_path):
    (tmp_path / "v.py").write_text(PLUGIN)
    (tmp_path / "rows.jsonl").write_text(
        "".join(f'{{"q": "Q{i}", "a": "{i}", "tag": {i}}}\n' for i in range(10))
    )
    (tmp_path / "c.yaml").write_text(textwrap.dedent("""\
        tasks:
          sources:
            - {type: jsonl, name: rows, path: rows.jsonl, verifier: v.py:is_even,
               fields: {question: q, answer: a, metadata: [tag]}}
        """))  # fmt: skip
    (task,) = build_tasks(load_config([tmp_path / "c.yaml"]).tasks)
    p = task.prompt(0)
    assert p.question.startswith("Q") and p.metadata == {"tag": int(p.answer)}
    assert task.score(p, "4") == 1.0 and task.score(p, "3") == 0.0 and task.score(p, None) == 0.0


def test_entry_point_plugins(tmp_path, monkeypatch):
    (tmp_path / "swarmrl_demo_pkg.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [EntryPoint("brevity2", "swarmrl_demo_pkg:brevity", "swarmrl.rewards"),
           EntryPoint("doubling", "swarmrl_demo_pkg:Doubling", "swarmrl.tasks")]  # fmt: skip
    monkeypatch.setattr("node.plugins.entry_points", lambda group: [e for e in eps if e.group == group])
    cfg = load_config([], ["tasks.rewards.brevity2=1.0", "tasks.sources=[{type: plugin, plugin: doubling}]"])
    (task,) = build_tasks(cfg.tasks)
    assert task.name == "doubling"
    with pytest.raises(
        ConfigError, match=r"tasks.rewards: .*unknown reward 'nope'; valid: brevity2, correctness"
    ):
        load_config([], ["tasks.rewards.nope=1"])
    with pytest.raises(PluginError, match=r"t.k: cannot load task 'gone': no entry point 'gone' in group "
                       r"'swarmrl.tasks' \(installed: doubling\)"):  # fmt: skip
        load("gone", "task", "t.k")
    sys.modules.pop("swarmrl_demo_pkg", None)


@pytest.mark.parametrize(
    "override, message",
    [
        ("tasks.reward_plugins.score=mymod:score",
         r"tasks.reward_plugins: .*score: cannot import 'mymod:score': No module named 'mymod'"),
        ("tasks.reward_plugins.score=./missing.py:score",
         r"tasks.reward_plugins: .*cannot import './missing.py:score': no such file: missing.py"),
        ("tasks.sources=[{type: jsonl, verifier: 'mymod:check'}]",
         r"tasks.sources.0.verifier: .*No module named 'mymod'"),
        ("tasks.reward_plugins.format=node.tasks.rewards:length", r"'format' is a built-in reward"),
    ],
)  # fmt: skip
def test_bad_spec_is_a_config_error_naming_key_and_spec(override, message, tmp_path, capsys):
    with pytest.raises(ConfigError, match=message):
        load_config([], [override])
    assert main(["config", "show", override]) == 2  # exit 2, one line, no traceback
    assert "error: invalid config" in capsys.readouterr().err


def test_import_time_errors_name_the_key(tmp_path, monkeypatch):
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "ok.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        PluginError, match=r"^tasks.reward_plugins.r: cannot import 'broken.py:f': RuntimeError: boom"
    ):
        build_tasks(load_config([], ["tasks.reward_plugins.r=broken.py:f", "tasks.rewards.r=1"]).tasks)
    with pytest.raises(PluginError, match=r"ok.py:f': .*ok.py has no attribute 'f'"):
        build_tasks(load_config([], ["tasks.reward_plugins.r=ok.py:f", "tasks.rewards.r=1"]).tasks)
    with pytest.raises(PluginError, match=r"tasks.sources.0.plugin: 'ok.py:x' gave a int, not a task"):
        build_tasks(load_config([], ["tasks.sources=[{type: plugin, plugin: 'ok.py:x'}]"]).tasks)


def test_anchor_leaves_modules_entry_points_and_absolute_paths(tmp_path):
    data = {"tasks": {"reward_plugins": {"a": "pkg.mod:f", "b": "name", "c": "/abs/x.py:f", "d": "sub/x.py:f"},
                      "chat_template": "{{ messages }}", "sources": [{"path": "/abs/d.jsonl"}]}}  # fmt: skip
    out = anchor_paths(data, tmp_path)["tasks"]
    assert out["reward_plugins"] == {
        "a": "pkg.mod:f",
        "b": "name",
        "c": "/abs/x.py:f",
        "d": f"{tmp_path}/sub/x.py:f",
    }
    assert out["chat_template"] == "{{ messages }}" and out["sources"] == [{"path": "/abs/d.jsonl"}]


TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


@pytest.mark.parametrize("as_file", [False, True])
def test_chat_template_override_renders_prompts(as_file, tmp_path, tiny_config):
    from node.exchange import tokenizer_hash
    from node.policy import load_policy
    from node.rollout.render import Renderer

    value = TEMPLATE
    if as_file:
        (tmp_path / "t.jinja").write_text(TEMPLATE)
        (tmp_path / "c.yaml").write_text("tasks:\n  chat_template: t.jinja\n")
    cfg = tiny_config(*([] if as_file else [f"tasks.chat_template={value!r}"]),
                      files=(str(tmp_path / "c.yaml"),) if as_file else ())  # fmt: skip
    policy = load_policy(cfg.model)
    before = tokenizer_hash(policy.tokenizer)
    renderer = Renderer.from_config(policy.tokenizer, cfg.tasks, policy.model)
    text = policy.tokenizer.decode(renderer.ids("What is 2 + 2?"))
    system, example = cfg.tasks.system_prompt, cfg.tasks.examples[0]
    assert text.startswith(f"[system] {system}\n[user] {example.question}\n[assistant] {example.answer}\n")
    assert text.endswith("[user] What is 2 + 2?\n[assistant] ")
    assert tokenizer_hash(policy.tokenizer) != before  # peers rendering otherwise do not reuse our tokens


def test_chat_template_file_missing_is_a_config_error(tmp_path):
    (tmp_path / "c.yaml").write_text("tasks:\n  chat_template: nowhere.jinja\n")
    with pytest.raises(
        ConfigError, match=r"tasks.chat_template: .*neither a Jinja template nor a file: .*nowhere"
    ):
        load_config([tmp_path / "c.yaml"])
