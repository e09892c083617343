"""`hf_dataset` task sources (node/tasks/hf_dataset.py): parquet, JSONL and save_to_disk
fixtures written here, field mapping, eval splits, and the offline error for a hub id."""

from __future__ import annotations

import json
import time

import pytest

from node.config import load_config
from node.tasks import build_tasks

datasets = pytest.importorskip("datasets")  # the `datasets` extra (the Makefile installs it)

ROWS = [{"problem": f"What is {i} + {i}?", "solution": str(2 * i), "level": i % 3} for i in range(20)]
FIELDS = "{question: problem, answer: solution, metadata: [level]}"


def build(tmp_path, source: str):
    (tmp_path / "c.yaml").write_text(f"tasks:\n  sources:\n    - {source}\n")
    (task,) = build_tasks(load_config([tmp_path / "c.yaml"]).tasks)
    return task


def check_mapped(task, train: int, held: int):
    assert len(task) == train and len(task.heldout(100)) == held
    p = task.prompt(0)
    row = next(r for r in ROWS if r["problem"] == p.question)
    assert p.answer == row["solution"] and p.metadata == {"level": row["level"]}
    assert task.score(p, row["solution"]) == 1.0 and task.score(p, "-1") == 0.0  # math-verify
    assert task.lookup(p.question) == p and task.lookup(task.heldout(1)[0].question) is None


def test_parquet_file_with_field_mapping_and_heldout_fraction(tmp_path):
    datasets.Dataset.from_list(ROWS).to_parquet(str(tmp_path / "d.parquet"))
    task = build(
        tmp_path,
        f"{{type: hf_dataset, name: sums, path: d.parquet, fields: {FIELDS}, heldout_fraction: 0.25}}",
    )
    check_mapped(task, 15, 5)


def test_jsonl_file(tmp_path):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    check_mapped(build(tmp_path, f"{{type: hf_dataset, name: sums, path: d.jsonl, fields: {FIELDS}}}"), 18, 2)


def test_load_from_disk_with_an_eval_split(tmp_path):
    splits = {"train": datasets.Dataset.from_list(ROWS[:16]), "test": datasets.Dataset.from_list(ROWS[16:])}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "saved"))
    task = build(
        tmp_path, f"{{type: hf_dataset, name: sums, path: saved, eval_split: test, fields: {FIELDS}}}"
    )
    check_mapped(task, 16, 4)
    assert {p.question for p in task.heldout(4)} == {r["problem"] for r in ROWS[16:]}


def test_folder_of_split_files(tmp_path):
    (tmp_path / "data").mkdir()
    for name, rows in (("train", ROWS[:12]), ("test", ROWS[12:])):
        (tmp_path / "data" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = build(
        tmp_path, f"{{type: hf_dataset, name: sums, path: data, eval_split: test, fields: {FIELDS}}}"
    )
    check_mapped(task, 12, 8)


@pytest.mark.parametrize(
    "extra, message",
    [
        ("fields: {question: q}", r".*d.parquet: no column 'q' \(columns: problem, solution, level\); set the source's `fields`"),
        (f"fields: {FIELDS}, eval_split: validation", r"eval_split='validation': .* has splits train"),
        (f"fields: {FIELDS}, split: dev", r"split='dev': .* has splits train"),
    ],
)  # fmt: skip
def test_errors_name_the_source_and_the_setting(tmp_path, extra, message):
    datasets.Dataset.from_list(ROWS).to_parquet(str(tmp_path / "d.parquet"))
    with pytest.raises(ValueError, match=r"^tasks.sources.0 \('sums'\): " + message):
        build(tmp_path, f"{{type: hf_dataset, name: sums, path: d.parquet, {extra}}}")


def test_missing_path_and_ambiguous_source(tmp_path):
    with pytest.raises(ValueError, match=r"dataset not found: .*nowhere.parquet"):
        build(tmp_path, "{type: hf_dataset, name: sums, path: nowhere.parquet}")
    with pytest.raises(ValueError, match="exactly one of `path` \\(local\\) and `hub_id`"):
        build(tmp_path, "{type: hf_dataset, name: sums}")


def test_hub_id_offline_fails_fast_naming_the_dataset(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # conftest sets HF_HUB_OFFLINE=1 too
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"dataset 'swarmrl-test/no-such-set \(main\)' is not in the datasets cache "
                       "and HF_HUB_OFFLINE=1"):  # fmt: skip
        build(tmp_path, "{type: hf_dataset, name: remote, hub_id: swarmrl-test/no-such-set, subset: main}")
    assert time.monotonic() - start < 15  # no retry loop (online-but-unreachable retries for about 60 s)


def test_missing_extra_is_named(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ValueError, match=r"needs the `datasets` package: pip install 'swarmrl\[datasets\]'"):
        build(tmp_path, "{type: hf_dataset, name: sums, path: d.parquet}")
