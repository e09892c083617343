"""Tasks and reward functions with real verifiers (reasoning-gym, math-verify)."""

from __future__ import annotations

import json

import pytest

from node.tasks.jsonl_task import JsonlTask
from node.tasks.reasoning_gym_task import ReasoningGymTask
from node.tasks.rewards import Scored, extract_answer, score


@pytest.fixture(scope="module")
def arithmetic():
    return ReasoningGymTask("basic_arithmetic", 50, 7, {"min_terms": 2, "max_terms": 2, "max_digits": 2})


def test_reasoning_gym_prompts_are_stable_and_scored_by_the_dataset(arithmetic):
    p = arithmetic.prompt(3)
    again = ReasoningGymTask("basic_arithmetic", 50, 7, {"min_terms": 2, "max_terms": 2, "max_digits": 2}).prompt(3)
    assert p.prompt_id == "basic_arithmetic:7:3" and again.question == p.question
    assert arithmetic.score(p, p.answer) == 1.0
    assert arithmetic.score(p, f" {p.answer} ") == 1.0  # stripped before scoring
    assert arithmetic.score(p, str(int(p.answer) + 1)) == 0.0
    assert arithmetic.score(p, None) == 0.0


def test_heldout_is_disjoint_from_training(arithmetic):
    train = {arithmetic.prompt(i).question for i in range(len(arithmetic))}
    held = arithmetic.heldout(20)
    assert len(held) == 20 and not train & {h.question for h in held}


def test_jsonl_task_uses_math_verify(tmp_path):
    rows = [{"question": f"q{i}", "answer": "1/2"} for i in range(20)]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    task = JsonlTask.from_file("half", path, seed=0)
    assert len(task) == 18 and len(task.heldout(5)) == 2
    p = task.prompt(0)
    assert task.score(p, "0.5") == 1.0 and task.score(p, "\\frac{1}{2}") == 1.0
    assert task.score(p, "0.6") == 0.0 and task.score(p, "not math ((") == 0.0


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        JsonlTask.from_file("bad", path)


def test_extract_answer_prefers_the_last_tag_then_the_last_number():
    assert extract_answer("x <answer>3</answer> y <answer> 4 </answer>") == "4"
    assert extract_answer("12 + 7 = 19.") == "19"
    assert extract_answer("no digits") is None


def test_reward_components_are_kept_separately(arithmetic):
    p = arithmetic.prompt(0)
    ok = Scored(p, f"<answer>{p.answer}</answer>", 5, False, 16, arithmetic)
    total, parts = score(ok, {"correctness": 1.0, "format": 0.2, "length": 0.5})
    assert parts == {"correctness": 1.0, "format": 1.0, "length": pytest.approx(1 - 5 / 16)}
    assert total == pytest.approx(1.0 + 0.2 + 0.5 * (1 - 5 / 16))
    cut = Scored(p, f"<answer>{p.answer}</answer>", 16, True, 16, arithmetic)
    _, parts = score(cut, {"correctness": 1.0, "format": 1.0})
    assert parts == {"correctness": 1.0, "format": 0.0}  # truncated: no format credit


def test_jsonl_with_invalid_utf8_names_the_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"question": "a", "answer": "1"}\n{"question": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(ValueError, match=r"latin1\.jsonl:2: not UTF-8"):
        JsonlTask.from_file("latin1", path)


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"question": None, "answer": "1"}, "'question' must be non-empty text, got None"),
        ({"question": "  ", "answer": "1"}, "'question' must be non-empty text"),
        ({"question": "a", "answer": None}, "'answer' must be non-empty text or a number, got None"),
        ({"question": "a"}, "needs 'question' and 'answer'"),
        (["a", "1"], "needs 'question' and 'answer'"),
    ],
)
def test_jsonl_null_question_is_refused_not_read_as_none(tmp_path, row, reason):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({"question": "b", "answer": "2"}) + "\n")
    with pytest.raises(ValueError, match=r"rows\.jsonl:1: ") as e:  # line numbers count from 1
        JsonlTask.from_file("rows", path)
    assert reason in str(e.value)


def test_jsonl_rows_are_counted_from_1_and_numbers_are_answers():
    ok = {"question": "1 + 1", "answer": 2}
    with pytest.raises(ValueError, match="rows: row 2: 'question' must be non-empty text"):
        JsonlTask("rows", [ok, {"question": None, "answer": "1"}])
    task = JsonlTask("rows", [ok, {"question": "2 + 2", "answer": 4}], seed=0)
    assert sorted(p.answer for p in task._train + task._held) == ["2", "4"]


def test_bad_reasoning_gym_option_names_the_source(tmp_path):
    from node.config import TasksConfig, TaskSource
    from node.tasks import build_tasks

    def sources(*items: TaskSource) -> TasksConfig:
        return TasksConfig(sources=list(items))

    with pytest.raises(ValueError, match=r"tasks\.sources\.0 \('basic_arithmetic'\)") as e:
        build_tasks(sources(TaskSource(options={"min_terms": 0})))  # before: an AssertionError traceback
    assert "min_terms must be positive" in str(e.value) and "'min_terms': 0" in str(e.value)
    with pytest.raises(ValueError, match=r"tasks\.sources\.0 .*TypeError"):
        build_tasks(sources(TaskSource(options={"operators": 5})))
    missing = TaskSource(type="jsonl", name="mine", path=str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match=r"tasks\.sources\.1 \('mine'\): jsonl file not found"):
        build_tasks(sources(TaskSource(), missing))
