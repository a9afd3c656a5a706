"""The task notebooks' shared machinery (workbench/evaluation/walkthrough.py): tables, data, records, probes.

Fast tests use a stand-in model and hand-made results; one slow test writes the replicas and reads
every task's folder the way `walkthrough` does. The whole walk-through on nano runs in the notebooks
(tests/test_notebooks_clean.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

import workbench as wb
from workbench.evaluation.readers import read_dataset
from workbench.evaluation.runner_report import EvalResult
from workbench.evaluation.walkthrough import (
    DATA_FOLDERS,
    Walkthrough,
    official_prompt,
    paper_table,
    prepare_data,
    prompt_table,
    walkthrough,
)
from workbench.tags import swap_variants


@dataclass(frozen=True)
class _Generation:
    text: str


class EchoTaskModel:
    """Answers with the prompt's task tag: a model that follows the task tag and nothing else."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object, int]] = []

    def generate(self, prompt, audio, max_new_tokens=None):
        self.calls.append((prompt.render(), audio, max_new_tokens))
        return _Generation(f"did {prompt.task}")

    def describe(self):
        return {"total": 7_632_768}


def _result(task: str, ids: list[str]) -> EvalResult:
    records = tuple({"id": i, "audio": f"{i}.wav", "reference": "ref", "output": f"out {i}", "score": {"wer": 0.0}}
                    for i in ids)
    return EvalResult(task=task, metrics=(), records=records, summary={})


def _walkthrough(source: str = "nano", on_replicas: bool = True) -> Walkthrough:
    results = {"librispeech-dev-clean": _result("librispeech-dev-clean", ["real-1", "syn-1", "syn-2"]),
               "aishell1-test": _result("aishell1-test", ["zh-real", "zh-syn"])}
    origins = {"real-1": "real 1272-128104-0000.flac", "syn-1": "synthetic asr-test-000004",
               "syn-2": "synthetic asr-test-000007", "zh-real": "real zh.wav", "zh-syn": "synthetic asr-test-000006"}
    return Walkthrough(model=EchoTaskModel(), source=source, data=Path("/data"), on_replicas=on_replicas,
                       results=results, origins=origins if on_replicas else {})


def test_prompt_table_takes_the_official_prompt_apart_and_names_missing_slots():
    prompt = official_prompt("librispeech-dev-clean")
    assert prompt.render() == "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"
    meaning = {slot: f"about {slot}" for slot, _ in prompt.slots()}
    table = prompt_table(prompt, meaning)
    assert list(table["slot"]) == ["start", "audio_lang", "task", "text_lang", "timestamps", "instructions"]
    assert list(table["tag"])[2] == "<|transcribe|>" and list(table["what it says"])[2] == "about task"
    del meaning["timestamps"]
    with pytest.raises(ValueError, match=r"no entry for the slot\(s\) \['timestamps'\]"):
        prompt_table(prompt, meaning)


def test_paper_table_holds_the_registry_numbers():
    table = paper_table("meld", "covost2-en-de")
    meld, covost = wb.get_task("meld"), wb.get_task("covost2-en-de")
    assert table.loc[("meld", "ACC"), "Qwen-Audio (paper)"] == meld.paper["ACC"]
    assert table.loc[("meld", "ACC"), "previous best"] == meld.previous_best["ACC"][0]
    assert table.loc[("covost2-en-de", "BLEU"), "by"] == covost.previous_best["BLEU"][1]
    assert len(table) == len(meld.paper) + len(covost.paper)


def test_bad_data_folder_and_unknown_task_each_get_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="WORKBENCH_DATA"):
        prepare_data(tmp_path / "missing")
    assert prepare_data(tmp_path) == (tmp_path, {})     # a real folder is taken as it is: no origins
    with pytest.raises(ValueError, match="no walk-through for \\['librispeech-test-clean'\\].*meld"):
        walkthrough("librispeech-test-clean")            # refused before any replica is written or model loaded


def test_records_carry_task_and_origin_and_examples_can_stay_inside_nanos_world():
    wt = _walkthrough()
    records = wt.records
    assert list(records["task"]) == ["librispeech-dev-clean"] * 3 + ["aishell1-test"] * 2
    assert list(records["origin"].str.split().str[0]) == ["real", "synthetic", "synthetic", "real", "synthetic"]
    assert "score.wer" in records.columns
    assert wt.example()["id"] == "real-1"
    assert wt.example(synthetic=True)["id"] == "syn-1"
    assert wt.example("aishell1-test", synthetic=True)["id"] == "zh-syn"
    assert wt.result is wt.results["librispeech-dev-clean"] and wt.task.name == "librispeech-dev-clean"
    assert not wt.real and str(wt).startswith("nano: 7.6 M parameters, librispeech-dev-clean, aishell1-test on the replicas")
    assert str(wt).endswith("5 items")
    # On a real dataset every item counts, and origins say "dataset".
    real = _walkthrough("/models/Qwen-Audio", on_replicas=False)
    assert real.real and real.name == "Qwen-Audio"
    assert real.example(synthetic=True)["id"] == "real-1"
    assert set(real.records["origin"]) == {"dataset"}


def test_probe_runs_every_variant_on_the_same_audio_and_marks_what_moved():
    wt = _walkthrough()
    prompt = official_prompt("librispeech-dev-clean")
    variants = swap_variants(prompt, slot="task", values=["translate"]) + swap_variants(
        prompt, slot="text_lang", values=["de"])
    probe = wt.probe(prompt, "clip.wav", variants)
    assert list(probe["variant"]) == ["official prompt", "task: transcribe → translate", "text_lang: en → de"]
    assert list(probe["output"]) == ["did transcribe", "did translate", "did transcribe"]
    assert list(probe["moved"]) == [False, True, False]     # the stand-in ignores the language tag
    calls = wt.model.calls
    assert [audio for _, audio, _ in calls] == ["clip.wav"] * 3
    assert {n for _, _, n in calls} == {wb.get_task("librispeech-dev-clean").max_new_tokens}   # the task's limit
    wt.probe(prompt, "clip.wav", [], max_new_tokens=5)
    assert calls[-1][2] == 5


@pytest.mark.slow
def test_every_task_folder_is_where_the_replicas_write_it():
    data, origins = prepare_data(items_per_dataset=2)
    assert origins and all(o.split()[0] in ("real", "synthetic", "demo") for o in origins.values())
    for name, folder in DATA_FOLDERS.items():
        task = wb.get_task(name)
        items = read_dataset(task.dataset, data / folder, **task.reader_kwargs)
        assert len(items) >= 2, name
