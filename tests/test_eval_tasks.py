"""The benchmark registry: official prompts, decoding limits, Whisper prompts, scoring end to end."""
from __future__ import annotations

import dataclasses
import inspect
import pickle
import shutil
from pathlib import Path

import pytest

from workbench.evaluation import metrics_caption
from workbench.evaluation.items import Item
from workbench.evaluation.tasks import KINDS, TASKS, Task, get_task, with_reader

# QWEN_AUDIO.md §3, copied verbatim (the string after <audio>FILE</audio>), {…} filled per task.
ASR = "<|startoftranscript|><|{lang}|><|transcribe|><|{lang}|><|notimestamps|><|wo_itn|>"
S2TT = "<|startoftranscript|><|{src}|><|translate|><|{tgt}|><|notimestamps|><|itn|>"
CLOTHO = "<|startofanalysis|><|unknown|><|caption|><|en|><|notimestamps|><|caption_clotho|>"
ASC = "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|scene|>"
MELD = "<|startofanalysis|><|en|><|keyword|><|en|><|notimestamps|><|emotion_recognition|>"
VSC = "<|startofanalysis|><|en|><|keyword|><|en|><|notimestamps|><|vocal_classification|>"
AQA = "<|startofanalysis|><|en|><|question|>{question}<|answer|>"
NSYNTH = "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|note_analysis|>"
SRWT = "<|startoftranscript|><|zh|><|transcribe|><|zh|><|timestamps|><|0.00|>"
QUESTION = "Is there a dog barking?"

EXPECTED_PROMPTS = {
    **{f"librispeech-{s}": ASR.format(lang="en") for s in ("dev-clean", "dev-other", "test-clean", "test-other")},
    **{f"aishell1-{s}": ASR.format(lang="zh") for s in ("dev", "test")},
    **{f"aishell2-{s}": ASR.format(lang="zh") for s in ("mic", "ios", "android")},
    **{f"covost2-{s}-{t}": S2TT.format(src=s, tgt=t)
       for s, t in (("en", "de"), ("de", "en"), ("en", "zh"), ("zh", "en"), ("es", "en"), ("fr", "en"), ("it", "en"))},
    "clotho": CLOTHO, "cochlscene": ASC, "tut2017": ASC, "meld": MELD, "vocalsound": VSC,
    "clotho-aqa": AQA.format(question=QUESTION), "nsynth": NSYNTH, "srwt": SRWT,
}
# max_new_tokens in each eval_audio/evaluate_*.py
EXPECTED_MAX_NEW_TOKENS = {"asr": 256, "s2tt": 256, "srwt": 256, "aac": 30, "mna": 30, "asc": 10,
                           "ser": 4, "vsc": 4, "aqa": 4}


def _item(reference, question=QUESTION) -> Item:
    return Item("item-0", Path("clip.wav"), reference, question=question)


def test_registry_has_every_benchmark():
    assert set(TASKS) == set(EXPECTED_PROMPTS)
    assert {t.kind for t in TASKS.values()} == set(KINDS)


@pytest.mark.parametrize("name", sorted(EXPECTED_PROMPTS))
def test_prompt_renders_the_official_string(name):
    task = get_task(name)
    assert task.prompt(_item("ref")).render() == EXPECTED_PROMPTS[name]
    assert task.max_new_tokens == EXPECTED_MAX_NEW_TOKENS[task.kind]
    assert task.min_new_tokens == 1
    assert task.paper and set(task.paper) == set(task.previous_best)
    assert task.primary_metric in task.paper


def test_aqa_needs_a_question():
    with pytest.raises(ValueError, match="no question"):
        get_task("clotho-aqa").prompt(_item("yes", question=None))


def test_whisper_prompts():
    item = _item("ref")
    assert get_task("librispeech-test-clean").whisper_prompt(item) == \
        "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"
    assert get_task("aishell1-test").whisper_prompt(item) == "<|startoftranscript|><|zh|><|transcribe|><|notimestamps|>"
    assert get_task("covost2-de-en").whisper_prompt(item) == "<|startoftranscript|><|de|><|translate|><|notimestamps|>"
    assert get_task("covost2-en-de").whisper_prompt(item) is None  # Whisper translates only into English
    assert get_task("srwt").whisper_prompt(item) == "<|startoftranscript|><|zh|><|transcribe|>"
    for name in ("clotho", "cochlscene", "meld", "vocalsound", "clotho-aqa", "nsynth"):
        assert get_task(name).whisper_prompt(item) is None


def test_get_task_suggests_and_lists():
    with pytest.raises(KeyError) as error:
        get_task("librispeech-test-clen")
    message = str(error.value)
    assert "did you mean 'librispeech-test-clean'" in message and "nsynth" in message and "srwt" in message


def test_task_is_frozen_hashable_picklable():
    task = get_task("meld")
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.max_new_tokens = 10
    assert hash(task) == hash(get_task("meld"))
    assert pickle.loads(pickle.dumps(task)) == task
    with pytest.raises(ValueError, match="kind"):
        Task("x", "nope", "meld")
    other = with_reader(task, "official_jsonl", path="meld_eval.jsonl")
    assert (other.dataset, other.reader_kwargs, other.prompt(_item("x"))) == \
        ("official_jsonl", {"path": "meld_eval.jsonl"}, task.prompt(_item("x")))


# One (output, reference) per kind; aac is scored with Java hidden, to stay fast.
CASES = {
    "librispeech-test-clean": ("hello world", "HELLO WORLD"),
    "covost2-en-de": ("Der Hund.", "Der Hund."),
    "clotho": ("a dog barks", ["a dog barks", "a dog is barking"]),
    "tut2017": ("bus", "bus"),
    "meld": ("neutral", "neutral"),
    "vocalsound": ("Laughter", "laughter"),
    "clotho-aqa": ("yes", "yes"),
    "nsynth": ("<|pitch|><|midi_pitch_60|><|velocity|><|midi_velocity_100|><|instrument|>keyboard<|sonic|>bright",
               {"pitch": 60, "velocity": 100, "instrument": "keyboard", "qualities": ["bright"]}),
    "srwt": ("<|0.54|>面<|0.86|>", [("面", 0.54, 0.86)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_score_emits_the_paper_metric_names(name, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(metrics_caption.shutil, "which",
                        lambda cmd, *a, **k: None if cmd == "java" else real_which(cmd))
    task = get_task(name)
    output, reference = CASES[name]
    items = [_item(reference), _item(reference)]
    scored = task.score([output, output], items)
    official = {m.name for m in scored if m.recipe == "official"}
    assert set(task.paper) <= official
    assert {m.recipe for m in scored} == {"official", "standard"}
    assert isinstance(task.score_item(output, items[0]), dict)
    with pytest.raises(ValueError):
        task.score([output], items)


def test_score_values_for_a_perfect_run():
    task = get_task("librispeech-test-clean")
    items = [_item("HELLO WORLD"), _item("GOOD MORNING")]
    official = [m for m in task.score(["hello world", "good morning"], items) if m.recipe == "official"]
    assert [(m.name, m.value) for m in official] == [("WER", 0.0)]
    srwt = get_task("srwt")
    record = srwt.score_item("<|0.50|>面<|0.86|>", _item([("面", 0.54, 0.86)]))
    assert record["aas_ms"] == pytest.approx(40.0) and record["wer"] == 0.0


def test_datasets_and_reader_arguments_match_the_readers():
    readers = pytest.importorskip("workbench.evaluation.readers")
    for task in TASKS.values():
        assert task.dataset in readers.READERS, f"{task.name}: no reader {task.dataset!r}"
        reader = readers.READERS[task.dataset]
        inspect.signature(reader).bind(Path("root"), **task.reader_kwargs)  # raises on an unknown argument
