"""Nano's held-out split through the runner equals recipes/eval_nano.py, which wrote assets/nano/eval.json.

eval.json holds aggregates over the whole split plus, per task, the first three items' reference and
output. On those three items of every task the runner must give eval.json's outputs, and the
recipe's own scorer must give the same aggregates on the runner's outputs as on the recipe's own
generation. scripts/evaluate_nano_heldout.py runs the whole split (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import workbench as wb
from workbench.evaluation.heldout import SPLIT_SIZES, TASKS, build_heldout, evaluate_heldout, runner_task
from workbench.models.qwen_audio.nano import NANO_DIR

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = 3    # eval.json keeps the first three items of each task


def load_script():
    spec = importlib.util.spec_from_file_location("evaluate_nano_heldout", ROOT / "scripts" / "evaluate_nano_heldout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def nano():
    torch.set_num_threads(1)    # the shared 2-core machine
    return wb.load("nano")


@pytest.fixture(scope="module")
def runs(nano, tmp_path_factory):
    return evaluate_heldout(nano, tmp_path_factory.mktemp("heldout"), per_task=EXAMPLES, batch_size=3)


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((NANO_DIR / "eval.json").read_text())


@pytest.mark.slow
def test_runner_outputs_equal_the_outputs_eval_json_holds(runs, reference):
    assert set(runs) == set(TASKS)
    for task, run in runs.items():
        examples = reference["tasks"][task]["examples"]
        assert [h.row["reference"] for h in run.items] == [e["reference"] for e in examples], task
        assert list(run.outputs) == [e["output"].strip() for e in examples], task
        assert all(r.summary["batch_check"]["status"] in ("passed", "skipped: no batch of two or more items to compare")
                   for r in run.results), task


@pytest.mark.slow
def test_recipe_scorer_gives_the_same_aggregates_on_the_runners_outputs(nano, runs):
    """eval_nano's pipeline (its prompts, `generate`, decoding limits) and its scorer on the same
    items: every aggregate equals the one on the runner's outputs."""
    script = load_script()
    for task, run in runs.items():
        rows = [h.row for h in run.items]
        prompts = [f"<audio>{h.item.audio}</audio>{h.row['prompt']}" for h in run.items]
        recipe = script.eval_nano.generate(nano, prompts, Path("/"), max_new_tokens=96 if task == "srwt" else 64)
        assert script.recipe_metrics(task, rows, run.outputs) == script.recipe_metrics(task, rows, recipe), task


@pytest.mark.slow
def test_the_comparison_table_marks_a_subset_and_names_the_runner_metric(runs, reference):
    rows = load_script().comparison(runs, reference)
    asr = [r for r in rows if r["task"] == "asr"]
    assert {r["metric"] for r in asr} == {"cer_de", "cer_es", "cer_fr"}    # the first three are de/es/fr speech
    assert all(r["equal"] == "subset" and r["items"] == EXAMPLES for r in rows)
    assert "tut2017 ACC 1 (3)" in next(r for r in rows if r["task"] == "asc")["runner metric (official)"]


def test_bad_task_or_index_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no held-out task 'chat'"):
        build_heldout("chat", [0], tmp_path)
    with pytest.raises(ValueError, match=r"0…59"):
        build_heldout("ser", [SPLIT_SIZES["ser"]], tmp_path)


def test_a_prompt_the_registry_does_not_reproduce_is_refused():
    row = {"id": "asr-test-000000", "language": "de", "reference": "x",
           "prompt": "<|startoftranscript|><|de|><|translate|><|en|><|notimestamps|><|wo_itn|>"}
    with pytest.raises(ValueError, match="the corpus item has"):
        runner_task("asr", row)


def test_built_items_are_reused_without_synthesis(tmp_path, monkeypatch):
    first = build_heldout("vsc", [1], tmp_path)
    import workbench.evaluation.heldout as heldout

    def no_synthesis(*args, **kwargs):
        raise AssertionError("rebuilt an item that was on disk")
    monkeypatch.setattr(heldout, "build_items", no_synthesis)
    again = build_heldout("vsc", [1], tmp_path)
    assert again == first and again[0].item.audio.read_bytes() == first[0].item.audio.read_bytes()
    assert again[0].row["reference"] == again[0].item.reference and again[0].row["id"] == "vsc-test-000001"
