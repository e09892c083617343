"""The command line: instant help, readable errors, the sub-commands that need no training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_help_parses_before_importing_torch():
    code = (
        "import sys\nfrom node.cli import main\n"
        "for argv in (['--help'], ['run', '--help'], ['eval', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "assert 'torch' not in sys.modules, 'help imported torch'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--resume" in out.stdout and "KEY=VALUE" in out.stdout


def test_config_show_prints_the_resolved_config(capsys):
    assert main(["config", "show", "-c", str(ROOT / "configs" / "tiny.yaml"), "trainer.lr=0.5"]) == 0
    text = capsys.readouterr().out
    assert "lr: 0.5" in text and "name: tiny" in text


def test_config_error_exits_2_with_the_key(capsys):
    assert main(["config", "show", "rollout.group_sise=4"]) == 2
    err = capsys.readouterr().err
    assert "rollout.group_sise" in err and "group_size" in err


def test_missing_model_folder_is_a_clear_error(capsys, tmp_path):
    rc = main(["eval", "-c", str(ROOT / "configs" / "tiny.yaml"), f"model.name={tmp_path}/nope"])
    assert rc == 2 and "no such folder" in capsys.readouterr().err


def test_offline_hub_id_is_a_clear_error(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    rc = main(["eval", "-c", str(ROOT / "configs" / "tiny.yaml"), "model.name=someorg/not-cached-model"])
    err = capsys.readouterr().err
    assert rc == 2 and "someorg/not-cached-model" in err and "HF_HUB_OFFLINE" in err


def test_refuses_to_overwrite_a_run_without_resume(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints" / "step_00000001").mkdir(parents=True)
    rc = main(["run", "-c", str(ROOT / "configs" / "tiny.yaml"), f"logging.run_dir={run}",
               f"model.cache_dir={tmp_path}/cache"])
    assert rc == 2 and "--resume" in capsys.readouterr().err


def test_keygen_writes_a_private_key_and_refuses_to_overwrite(tmp_path, capsys):
    key = tmp_path / "node.key"
    assert main(["keygen", "--out", str(key)]) == 0
    assert "12D3KooW" in capsys.readouterr().out
    assert key.stat().st_mode & 0o077 == 0
    assert main(["keygen", "--out", str(key)]) == 2


def test_plot_writes_a_png(tmp_path):
    rows = [{"step": i, "reward_mean": i / 10, "reward/correctness": i / 20, "grad_norm": 1.0} for i in range(1, 8)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{torn")
    assert main(["plot", str(tmp_path)]) == 0
    png = tmp_path / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_non_run_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["run", "--help"], ["--help"]])
def test_help_exits_zero(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0


def test_overrides_may_follow_options(capsys):
    assert main(["config", "show", "trainer.lr=0.25", "-c", str(ROOT / "configs" / "tiny.yaml"), "trainer.steps=9"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.25" in out and "steps: 9" in out
    assert main(["config", "show", "-c", str(ROOT / "configs" / "tiny.yaml"), "not-an-override"]) == 2
    assert "not-an-override" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a stray word after an option
        main(["config", "show", "-c", str(ROOT / "configs" / "tiny.yaml"), "trainer.lr=1", "--bogus"])


# -- misconfiguration: `error: <setting>: ...` and exit 2, never a traceback or a silent retry --------
TINY = str(ROOT / "configs" / "tiny.yaml")


def _run(tmp_path, *overrides: str) -> list[str]:
    return ["run", "-c", TINY, f"model.cache_dir={tmp_path}/cache", *overrides]


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["swarm.allowlist={tmp}/missing.txt"], "swarm.allowlist"),
        (["swarm.allowlist={tmp}/allow.txt"], "swarm.allowlist"),  # malformed, written below
        (["swarm.bootstrap=not-an-address"], "swarm.bootstrap"),
        (["swarm.bootstrap=/ip4/10.0.0.1/tcp/4001"], "swarm.bootstrap"),  # no /p2p/<peer id>: never dialable
    ],
)
def test_swarm_misconfiguration_refuses_to_start(tmp_path, capsys, overrides, field):
    # before: the node retried forever, trained solo and exited 0
    (tmp_path / "allow.txt").write_text("12D3KooWnot-a-peer-id\n")
    argv = _run(tmp_path, "swarm.mode=join", f"logging.run_dir={tmp_path}/run", *overrides)
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert field in _error(capsys)


def test_key_file_readable_by_others_is_an_error_naming_swarm_identity(tmp_path, capsys):
    key = tmp_path / "node.key"
    assert main(["keygen", "--out", str(key)]) == 0
    key.chmod(0o644)
    capsys.readouterr()
    rc = main(_run(tmp_path, "swarm.mode=join", f"swarm.identity={key}", f"logging.run_dir={tmp_path}/run"))
    err = _error(capsys)
    assert rc == 2 and "error: swarm.identity:" in err and "mode 0644" in err and "chmod 600" in err
    # the default key in the run dir is checked the same way
    (tmp_path / "run2").mkdir()
    (tmp_path / "run2" / "node.key").write_bytes(key.read_bytes())
    (tmp_path / "run2" / "node.key").chmod(0o644)
    assert main(_run(tmp_path, "swarm.mode=join", f"logging.run_dir={tmp_path}/run2")) == 2
    assert "error: swarm.identity:" in _error(capsys)
    assert main(_run(tmp_path, "swarm.mode=join", f"swarm.identity={tmp_path}/none.key")) == 2
    assert "swarm.identity: key file not found" in _error(capsys)


@pytest.mark.parametrize("run_dir", ["afile", "afile/below"])
def test_run_dir_that_is_a_file_is_an_error(tmp_path, capsys, run_dir):
    (tmp_path / "afile").write_text("x")
    assert main(_run(tmp_path, f"logging.run_dir={tmp_path / run_dir}")) == 2
    assert "logging.run_dir: " in _error(capsys)


def test_keygen_out_under_a_file_is_an_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["keygen", "--out", str(tmp_path / "afile" / "node.key")]) == 2
    err = _error(capsys)
    assert "error: --out: " in err and "afile is a file" in err


def test_bootstrap_port_in_use_is_an_error(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["bootstrap", "--host", "127.0.0.1", "--port", str(port)]) == 2
    err = _error(capsys)
    assert "--port" in err and f"127.0.0.1:{port}" in err


def test_bootstrap_identity_readable_by_others_is_an_error(tmp_path, capsys):
    key = tmp_path / "boot.key"
    assert main(["keygen", "--out", str(key)]) == 0
    key.chmod(0o640)
    capsys.readouterr()
    assert main(["bootstrap", "--host", "127.0.0.1", "--identity", str(key), "--backend", "libp2p"]) == 2
    assert "error: --identity:" in _error(capsys)


def test_bad_reasoning_gym_option_is_an_error_naming_the_source(tmp_path, capsys):
    rc = main(_run(tmp_path, f"logging.run_dir={tmp_path}/run", "tasks.sources.0.options.min_terms=0"))
    assert rc == 2 and "tasks.sources.0" in _error(capsys)
