"""Experiment trackers: TensorBoard, Weights & Biases, MLflow and trackio behind one small interface.

The run directory is the record of a run (`metrics.jsonl`, `samples.jsonl`); a tracker is an
optional copy of it in a dashboard, named in `logging.trackers`.  What this module guarantees:

- **Optional, and loud when missing.**  A tracker whose package is not installed prints one
  warning that names the package and the pip command, and the run goes on without it (before,
  `logging.tensorboard=true` without TensorBoard wrote nothing and said nothing).
- **A dashboard never stops training.**  A tracker that fails to start, or raises while logging
  (a network outage, a server that went away), is dropped with a warning; the others go on.
- **Offline by default where the backend allows.**  W&B runs online only when api.wandb.ai can
  be reached (else offline, into RUN_DIR/wandb, for `wandb sync` later); MLflow writes a local
  file store in RUN_DIR/mlruns unless `logging.mlflow_uri` (or MLFLOW_TRACKING_URI, MLflow's own
  setting) names a server; trackio keeps its local store unless told otherwise by its own settings.
- **Resume continues the same run**: the W&B and MLflow run ids are kept in RUN_DIR/trackers.json.

Why not accelerate's trackers (`accelerate.tracking`): they are built for an `Accelerator`
spread over processes (every call goes through `PartialState` to run on the main process only),
only W&B and ClearML there log tables, and their constructors pass the backend's kwargs through,
so the offline fallback, the missing-package warning and drop-on-error would all be written
around them anyway.  A node is one process; four classes of twenty lines each say more plainly
what is sent where, and swarmrl needs no accelerate for it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import re
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}
STATE_FILE = "trackers.json"  # run ids kept across --resume

Say = Callable[[str], None]


def warn(text: str) -> None:
    print(f"[node] warning: {text}", file=sys.stderr, flush=True)


class Tracker(Protocol):
    name: str

    def log(self, step: int, scalars: dict[str, float]) -> None: ...

    def table(self, step: int, key: str, columns: list[str], rows: list[list[Any]]) -> None: ...

    def close(self) -> None: ...


def installed(module: str) -> bool:
    if module in sys.modules:  # imported already (or a test's stand-in)
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def requested(logging_cfg: Any, say: Say = warn) -> list[str]:
    """The tracker names to open: `logging.trackers`, plus TensorBoard when the deprecated
    `logging.tensorboard` is true; each name whose package is missing is warned about and left out.
    Cheap (no backend is imported), so the CLI calls it before loading the model."""
    names = list(dict.fromkeys(logging_cfg.trackers))
    if logging_cfg.tensorboard:
        say("logging.tensorboard is deprecated: use logging.trackers=[tensorboard]")
        if "tensorboard" not in names:
            names.append("tensorboard")
    elif logging_cfg.tensorboard is False and "tensorboard" in names:
        names.remove("tensorboard")  # an explicit `logging.tensorboard=false` (benchmarks pass it) wins
    out = []
    for name in names:
        package = PACKAGES[name]
        if installed(package):
            out.append(name)
        else:
            say(f"logging.trackers lists {name}, but the {package} package is not installed; continuing "
                f"without it (pip install 'swarmrl[{name}]' or pip install {package})")  # fmt: skip
    return out


# -- the fan-out the metrics log writes to --------------------------------------------------------
class TrackerSet:
    """The open trackers; one that raises is closed, dropped and warned about."""

    def __init__(self, trackers: Sequence[Tracker] = (), say: Say = warn):
        self.trackers = list(trackers)
        self.say = say

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.trackers]

    def _each(self, what: str, call: Callable[[Tracker], None]) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as e:  # a dashboard must not stop training
                self.say(f"{tracker.name}: {what} failed ({type(e).__name__}: {e}); continuing without it")
                self.trackers.remove(tracker)
                try:
                    tracker.close()
                except Exception:  # it already failed; the warning said so
                    pass

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        scalars = scalar_metrics(metrics)
        if scalars:
            self._each("logging metrics", lambda t: t.log(step, scalars))

    def table(self, step: int, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        self._each("logging a table", lambda t: t.table(step, key, columns, rows))

    def close(self) -> None:
        self._each("closing", lambda t: t.close())
        self.trackers = []


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v) for k, v in metrics.items()
        if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))
    }  # fmt: skip


def open_trackers(
    names: Sequence[str],
    logging_cfg: Any,
    run_dir: Path,
    config: dict[str, Any],
    resume: bool,
    say: Say = warn,
) -> TrackerSet:
    """Start the named trackers (see `requested`); one that fails to start is warned about and skipped.
    `config` (the resolved config as plain data) is recorded as the run's parameters."""
    run_dir = Path(run_dir)
    state_path = run_dir / STATE_FILE
    state: dict[str, str] = {}
    if resume and state_path.is_file():
        try:
            state = json.loads(state_path.read_text())
        except ValueError:
            state = {}
    run_name = logging_cfg.run_name or run_dir.resolve().name
    opened: list[Tracker] = []
    for name in names:
        try:
            if name == "tensorboard":
                opened.append(TensorBoard(run_dir))
            elif name == "wandb":
                opened.append(WandB(logging_cfg, run_name, run_dir, config, state.get("wandb"), say))
            elif name == "mlflow":
                opened.append(MLflow(logging_cfg, run_name, run_dir, config, state.get("mlflow")))
            elif name == "trackio":
                opened.append(Trackio(logging_cfg, run_name, config, resume))
            else:
                raise ValueError(f"unknown tracker {name!r}; known: {', '.join(TRACKERS)}")
        except Exception as e:  # a missing API key, an unreachable server, ...
            say(f"{name}: could not start ({type(e).__name__}: {e}); continuing without it")
    ids = {t.name: t.run_id for t in opened if getattr(t, "run_id", None)}
    if ids:
        run_dir.mkdir(parents=True, exist_ok=True)
        state_path.write_text(json.dumps(state | ids, indent=1) + "\n")
    return TrackerSet(opened, say)


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def reachable(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# -- the backends ----------------------------------------------------------------------------------
class TensorBoard:
    name = "tensorboard"

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(Path(run_dir) / "tb"))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            self._writer.add_scalar(k, v, step)

    def table(self, step: int, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        self._writer.add_text(key, markdown_table(columns, rows), step)  # TensorBoard renders markdown

    def close(self) -> None:
        self._writer.close()


class WandB:
    name = "wandb"

    def __init__(self, cfg: Any, run_name: str, run_dir: Path, config: dict, run_id: str | None, say: Say):
        import wandb

        self._wandb = wandb
        mode, why = cfg.wandb_mode, "logging.wandb_mode=offline"
        if mode == "auto" and os.environ.get("WANDB_MODE"):
            mode = None  # W&B's own switch, set by the user: W&B decides
        elif mode == "auto":
            mode, why = (
                ("online", "") if reachable("api.wandb.ai") else ("offline", "api.wandb.ai not reachable")
            )
        kwargs = dict(project=cfg.project, name=run_name, config=config, dir=str(run_dir), resume="allow")
        if run_id:
            kwargs["id"] = run_id
        try:
            self._run = wandb.init(mode=mode, **kwargs)
        except Exception as e:  # no API key, a proxy, a timeout: keep the data locally
            if mode != "online" or cfg.wandb_mode == "online":
                raise
            mode, why = "offline", f"online start failed: {type(e).__name__}: {e}"
            self._run = wandb.init(mode=mode, **kwargs)
        if mode == "offline":
            say(
                f"wandb: logging offline ({why}); upload later with `wandb sync {run_dir}/wandb/offline-run-*`"
            )
        self.run_id = getattr(self._run, "id", None)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self._run.log(scalars, step=step)

    def table(self, step: int, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        self._run.log({key: self._wandb.Table(columns=columns, data=rows)}, step=step)

    def close(self) -> None:
        self._run.finish()


# MLflow metric names: alphanumerics, _ - . / and space
_MLFLOW_BAD = re.compile(r"[^\w\-./ ]")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)
    return out


class MLflow:
    name = "mlflow"

    def __init__(self, cfg: Any, run_name: str, run_dir: Path, config: dict, run_id: str | None):
        import mlflow

        self._mlflow = mlflow
        uri = (
            cfg.mlflow_uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or (Path(run_dir) / "mlruns").resolve().as_uri()
        )
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(cfg.project)
        run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name)
        self.run_id = run.info.run_id
        if not run_id:  # parameters are immutable in MLflow: a resumed run keeps its first ones
            mlflow.log_params(flatten(config))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self._mlflow.log_metrics({_MLFLOW_BAD.sub("_", k): v for k, v in scalars.items()}, step=step)

    def table(self, step: int, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        data = {c: [row[i] for row in rows] for i, c in enumerate(columns)}
        self._mlflow.log_table(data=data, artifact_file=f"{key}/step_{step:07d}.json")

    def close(self) -> None:
        self._mlflow.end_run()


class Trackio:
    name = "trackio"

    def __init__(self, cfg: Any, run_name: str, config: dict, resume: bool):
        import trackio

        self._trackio = trackio
        self._run = trackio.init(project=cfg.project, name=run_name, config=config,
                                 resume="allow" if resume else "never")  # fmt: skip

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self._trackio.log(scalars, step=step)

    def table(self, step: int, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        table = getattr(self._trackio, "Table", None)
        if table is not None:  # trackio before 0.4 has no tables; samples.jsonl still has them
            self._trackio.log({key: table(columns=columns, data=rows)}, step=step)

    def close(self) -> None:
        self._trackio.finish()
