"""Trackers: fake wandb / mlflow / trackio modules stand in sys.modules (nothing is installed and
nothing touches the network); a missing package is warned about; a failing tracker is dropped;
the sample table lands in samples.jsonl and in the trackers' tables."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import pytest

from node import trackers as tr
from node.config import load_config
from node.metrics import SAMPLES_FILE, MetricsLog, read_metrics, sample_rows
from node.records import Completion, Group, Prompt

ROOT = Path(__file__).resolve().parents[2]


def module(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # others probe it (transformers does)
    return mod


class Calls(list):
    def named(self, name: str) -> list[dict]:
        return [kw for n, kw in self if n == name]


def fake_wandb(calls: Calls, fail_online: bool = False) -> types.ModuleType:
    mod = module("wandb")

    class Run:
        id = "wb-run-1"

        def log(self, data, step=None):
            calls.append(("log", {"data": data, "step": step}))

        def finish(self):
            calls.append(("finish", {}))

    def init(**kw):
        calls.append(("init", kw))
        if fail_online and kw.get("mode") == "online":
            raise RuntimeError("api_key not configured (no-tty)")
        return Run()

    class Table:
        def __init__(self, columns, data):
            self.columns, self.data = columns, data

    mod.init, mod.Table = init, Table
    return mod


def fake_mlflow(calls: Calls) -> types.ModuleType:
    mod = module("mlflow")
    run = types.SimpleNamespace(info=types.SimpleNamespace(run_id="ml-run-1"))

    def record(name, result=None):
        def f(*args, **kw):
            calls.append((name, {"args": args, **kw}))
            return result

        return f

    for name in ("set_tracking_uri", "set_experiment", "log_params", "log_metrics", "log_table", "end_run"):
        setattr(mod, name, record(name))
    mod.start_run = record("start_run", run)
    return mod


def fake_trackio(calls: Calls) -> types.ModuleType:
    mod = module("trackio")
    mod.init = lambda **kw: calls.append(("init", kw))
    mod.log = lambda data, step=None: calls.append(("log", {"data": data, "step": step}))
    mod.finish = lambda: calls.append(("finish", {}))
    mod.Table = lambda columns, data: ("Table", columns, data)
    return mod


def logging_cfg(*overrides: str):
    return load_config(overrides=list(overrides)).logging


def test_wandb_mlflow_trackio_get_metrics_and_tables(tmp_path, monkeypatch):
    wb, ml, ti = Calls(), Calls(), Calls()
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(wb))
    monkeypatch.setitem(sys.modules, "mlflow", fake_mlflow(ml))
    monkeypatch.setitem(sys.modules, "trackio", fake_trackio(ti))
    monkeypatch.setattr(tr, "reachable", lambda *a, **k: False)  # no network: W&B goes offline
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = logging_cfg("logging.trackers=wandb,mlflow,trackio", "logging.project=demo")
    said: list[str] = []
    names = tr.requested(cfg, said.append)
    assert names == ["wandb", "mlflow", "trackio"] and said == []

    ts = tr.open_trackers(names, cfg, tmp_path, {"trainer": {"lr": 0.1}}, resume=False, say=said.append)
    ts.log(3, {"reward_mean": 0.5, "reward/correctness": 0.25, "note": "text", "nan": float("nan")})
    ts.table(3, "samples", ["prompt", "reward"], [["1+1?", 1.0]])
    ts.close()

    (init,) = wb.named("init")
    assert init["mode"] == "offline" and init["project"] == "demo" and init["dir"] == str(tmp_path)
    assert init["name"] == tmp_path.name and "id" not in init
    assert any("logging offline" in s and "wandb sync" in s for s in said)
    scalars, table = (kw for kw in wb.named("log"))
    assert scalars == {"data": {"reward_mean": 0.5, "reward/correctness": 0.25}, "step": 3}  # no text, no NaN
    assert table["data"]["samples"].columns == ["prompt", "reward"] and table["step"] == 3
    assert wb.named("finish") == [{}]

    assert ml.named("set_tracking_uri")[0]["args"] == ((tmp_path / "mlruns").resolve().as_uri(),)
    assert ml.named("set_experiment")[0]["args"] == ("demo",)
    assert ml.named("log_params")[0]["args"] == ({"trainer.lr": 0.1},)
    assert ml.named("log_metrics")[0] == {
        "args": ({"reward_mean": 0.5, "reward/correctness": 0.25},),
        "step": 3,
    }
    assert ml.named("log_table")[0] == {"args": (), "data": {"prompt": ["1+1?"], "reward": [1.0]},
                                        "artifact_file": "samples/step_0000003.json"}  # fmt: skip
    assert len(ml.named("end_run")) == 1

    assert ti.named("init")[0]["project"] == "demo" and ti.named("init")[0]["resume"] == "never"
    assert ti.named("log")[1] == {
        "data": {"samples": ("Table", ["prompt", "reward"], [["1+1?", 1.0]])},
        "step": 3,
    }

    # resume: the same W&B and MLflow runs go on
    assert json.loads((tmp_path / tr.STATE_FILE).read_text()) == {"wandb": "wb-run-1", "mlflow": "ml-run-1"}
    wb.clear(), ml.clear()
    tr.open_trackers(["wandb", "mlflow"], cfg, tmp_path, {}, resume=True, say=said.append).close()
    assert wb.named("init")[0]["id"] == "wb-run-1"
    assert ml.named("start_run")[0]["run_id"] == "ml-run-1" and ml.named("log_params") == []


def test_wandb_falls_back_to_offline_when_online_start_fails(tmp_path, monkeypatch):
    wb = Calls()
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(wb, fail_online=True))
    monkeypatch.setattr(tr, "reachable", lambda *a, **k: True)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    said: list[str] = []
    ts = tr.open_trackers(["wandb"], logging_cfg(), tmp_path, {}, resume=False, say=said.append)
    assert ts.names == ["wandb"] and [kw["mode"] for kw in wb.named("init")] == ["online", "offline"]
    assert any("online start failed" in s and "api_key" in s for s in said)


def test_a_missing_package_is_named_with_its_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # None in sys.modules: import fails, as when absent
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    said: list[str] = []
    cfg = logging_cfg("logging.trackers=[wandb]", "logging.tensorboard=true")
    assert tr.requested(cfg, said.append) == []
    assert any("deprecated" in s and "logging.trackers=[tensorboard]" in s for s in said)
    assert any("wandb package is not installed" in s and "pip install 'swarmrl[wandb]'" in s for s in said)
    assert any("tensorboard package is not installed" in s for s in said)
    # `logging.tensorboard=false` (what benchmarks pass) says nothing and opens nothing
    said.clear()
    assert tr.requested(logging_cfg("logging.tensorboard=false"), said.append) == [] and said == []


def test_the_old_tensorboard_switch_warns_when_tensorboard_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    MetricsLog(tmp_path, tensorboard=True).close()
    assert "TensorBoard is not installed" in capsys.readouterr().err


class Boom:
    name = "boom"

    def log(self, step, scalars):
        raise ConnectionError("server went away")

    def table(self, step, key, columns, rows):
        raise AssertionError("dropped trackers get nothing more")

    def close(self):
        pass


class Keep:
    name = "keep"

    def __init__(self):
        self.logged, self.tables = [], []

    def log(self, step, scalars):
        self.logged.append((step, scalars))

    def table(self, step, key, columns, rows):
        self.tables.append((step, key, columns, rows))

    def close(self):
        pass


def test_a_failing_tracker_is_dropped_and_training_goes_on(tmp_path):
    keep, said = Keep(), []
    log = MetricsLog(tmp_path, trackers=tr.TrackerSet([Boom(), keep], said.append))
    log.write(1, {"reward_mean": 0.5})
    log.write(2, {"reward_mean": 0.7})
    log.write_samples(2, [{"prompt": "q", "completion": "c", "reward": 1.0}])
    log.close()
    assert log.trackers.names == [] and [s for s, _ in keep.logged] == [1, 2]
    assert len(said) == 1 and "boom: logging metrics failed (ConnectionError: server went away)" in said[0]
    assert [r["reward_mean"] for r in read_metrics(tmp_path)] == [0.5, 0.7]


def _group(task: str, question: str, rewards: list[float]) -> Group:
    prompt = Prompt(f"{task}:{question}", task, question, "2")
    return Group(prompt, tuple(
        Completion(prompt, [1], [5, 6], [-0.1, -0.2], f"{question}->{i}", "stop", 0).scored(r, {"correctness": r})
        for i, r in enumerate(rewards)
    ))  # fmt: skip


def test_sample_rows_go_round_robin_over_prompts():
    groups = [_group("sums", "1+1", [1.0, 0.0, 0.2]), _group("sums", "2+0", [0.0, 1.0, 1.0])]
    rows = sample_rows(groups, 3)
    # one completion of each prompt first, then the second of the first prompt
    assert [(r["prompt"], r["completion"], r["reward"]) for r in rows] == [
        ("1+1", "1+1->0", 1.0), ("2+0", "2+0->0", 0.0), ("1+1", "1+1->1", 0.0)
    ]  # fmt: skip
    assert rows[0] | {} == {"task": "sums", "prompt": "1+1", "completion": "1+1->0", "reward": 1.0, "answer": "2",
                            "origin": "local", "components": {"correctness": 1.0}}  # fmt: skip
    assert len(sample_rows(groups, 10)) == 6 and sample_rows([], 4) == []


def test_samples_file_and_table_and_resume(tmp_path):
    keep = Keep()
    log = MetricsLog(tmp_path, trackers=tr.TrackerSet([keep]))
    groups = [_group("sums", "1+1", [1.0, 0.0]), _group("sums", "2+0", [0.5, 1.0])]
    for step in (10, 20):
        log.write(step, {"reward_mean": 0.5})
        log.write_samples(step, sample_rows(groups, 2))
    log.close()
    lines = [json.loads(x) for x in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert [(r["step"], r["prompt"], r["completion"], r["reward"]) for r in lines] == [
        (10, "1+1", "1+1->0", 1.0), (10, "2+0", "2+0->0", 0.5), (20, "1+1", "1+1->0", 1.0), (20, "2+0", "2+0->0", 0.5)
    ]  # fmt: skip
    step, key, columns, rows = keep.tables[0]
    assert (step, key, columns) == (
        10,
        "samples",
        ["step", "task", "prompt", "completion", "reward", "answer"],
    )
    assert rows == [[10, "sums", "1+1", "1+1->0", 1.0, "2"], [10, "sums", "2+0", "2+0->0", 0.5, "2"]]
    # a resume at step 15 drops the samples of step 20, as it drops its metrics
    MetricsLog(tmp_path, resume_step=15).close()
    assert [json.loads(x)["step"] for x in (tmp_path / SAMPLES_FILE).read_text().splitlines()] == [10, 10]


def test_run_writes_samples_and_sends_them_to_a_tracker(tmp_path, model_cache, monkeypatch, capsys):
    """The real loop on the tiny model: `swarmrl run -c tiny` with a (fake) W&B every step."""
    from node.cli import main

    wb = Calls()
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(wb))
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = tmp_path / "run"
    rc = main(["run", "-c", "tiny", f"logging.run_dir={run}", f"model.cache_dir={model_cache}", "model.threads=1",
               "trainer.steps=2", "rollout.max_new_tokens=8", "logging.samples_every=1", "logging.samples_rows=3", "logging.trackers=[wandb]",
               "logging.progress=plain", "logging.status_file=false"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    rows = [json.loads(x) for x in (run / SAMPLES_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 1, 1, 2, 2, 2]
    assert all(r["prompt"].startswith("Calculate") and isinstance(r["completion"], str) for r in rows)
    assert {type(r["reward"]) for r in rows} == {float}
    tables = [kw for kw in wb.named("log") if "samples" in kw["data"]]
    assert [t["step"] for t in tables] == [1, 2] and len(tables[0]["data"]["samples"].data) == 3
    assert wb.named("init")[0]["mode"] is None  # WANDB_MODE set: W&B's own switch decides
    assert wb.named("init")[0]["config"]["model"]["name"] == "tiny"


@pytest.mark.parametrize("name", tr.TRACKERS)
def test_every_tracker_has_an_extra(name):
    text = (ROOT / "pyproject.toml").read_text()
    assert f'{name} = ["' in text
