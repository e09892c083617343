"""A Hugging Face `datasets` dataset as a task: rows mapped to {question, answer, metadata}
and handed to `JsonlTask` (held-out split, lookup, math-verify or a verifier plugin).

Where the rows come from (`tasks.sources[]` of type `hf_dataset`):

- `path`, a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`
  (`load_from_disk`), a `.parquet`, `.json`, `.jsonl` or `.csv` file, or a folder of such
  files, whose split names come from the file names (`train.jsonl`, `test.jsonl`);
- `hub_id` (+ `subset`), downloaded once into the datasets cache.  Offline
  (`HF_HUB_OFFLINE=1`) a dataset that is not cached fails at once, naming it.

`datasets` is the optional extra `swarmrl[datasets]`, imported only when such a source is
built.  Every row is read into memory: this fits prompt sets (GSM8K, MATH), not pre-training
corpora.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node.tasks.jsonl_task import JsonlTask, map_row

FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}
SAVED_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ValueError(
            "type hf_dataset needs the `datasets` package: pip install 'swarmrl[datasets]'"
        ) from None
    datasets.disable_progress_bars()
    return datasets


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def open_dataset(source) -> tuple[Any, str]:
    """(Dataset or DatasetDict, a label for errors) of the source."""
    datasets = _datasets()
    if (source.path is None) == (source.hub_id is None):
        raise ValueError("an hf_dataset source needs exactly one of `path` (local) and `hub_id`")
    if source.path is not None:
        path = Path(source.path).expanduser()
        if path.is_dir() and any((path / m).is_file() for m in SAVED_MARKERS):
            return datasets.load_from_disk(str(path)), str(path)
        if path.is_dir():
            return datasets.load_dataset(str(path)), str(path)
        if path.is_file():
            builder = FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise ValueError(
                    f"{path}: unknown file type; use {', '.join(FILE_BUILDERS)} or a save_to_disk folder"
                )
            return datasets.load_dataset(builder, data_files={"train": str(path)}), str(path)
        raise ValueError(f"dataset not found: {path}")
    label = source.hub_id + (f" ({source.subset})" if source.subset else "")
    offline = _offline()
    try:
        return datasets.load_dataset(source.hub_id, source.subset), label
    except Exception as e:  # datasets raises many kinds: connection, not found, bad config
        if offline:
            raise ValueError(f"dataset {label!r} is not in the datasets cache and HF_HUB_OFFLINE=1 forbids "
                             "downloading it; run once online, or save it with save_to_disk and give `path`") from None  # fmt: skip
        raise ValueError(f"dataset {label!r}: {type(e).__name__}: {e}") from None


def _split(ds: Any, name: str, label: str, key: str) -> Any:
    if not hasattr(ds, "keys"):  # a single Dataset (load_from_disk of one split)
        if key == "eval_split":
            raise ValueError(f"{label} has no splits; drop eval_split to hold out heldout_fraction of it")
        return ds
    if name not in ds:
        raise ValueError(f"{key}={name!r}: {label} has splits {', '.join(ds.keys())}")
    return ds[name]


def _rows(split: Any, fields, label: str) -> list[dict]:
    wanted = [fields.question, fields.answer, *fields.metadata]
    missing = [c for c in wanted if c not in split.column_names]
    if missing:
        raise ValueError(f"{label}: no column {missing[0]!r} (columns: {', '.join(split.column_names)}); "
                         "set the source's `fields`")  # fmt: skip
    rows = split.select_columns(list(dict.fromkeys(wanted))).to_list()
    return [
        map_row(r, fields.question, fields.answer, fields.metadata, f"{label}: row {i}")
        for i, r in enumerate(rows, 1)
    ]


def build_hf_task(source, verifier=None) -> JsonlTask:
    ds, label = open_dataset(source)
    train = _rows(_split(ds, source.split, label, "split"), source.fields, label)
    held = None
    if source.eval_split is not None:
        held = _rows(
            _split(ds, source.eval_split, label, "eval_split"),
            source.fields,
            f"{label} [{source.eval_split}]",
        )
    return JsonlTask(source.name, train, source.seed, source.heldout_fraction, held, verifier)
