"""Qwen2-Audio through the runner: each task's natural-language prompt (no Qwen-Audio tags) after
the audio placeholder, what the model then receives, and a run end to end on a replica, on the tiny
random Qwen2-Audio of tests/tiny_models.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import write_qwen2_audio

import workbench as wb
from workbench.evaluation.items import Item
from workbench.evaluation.replicas import BENCHMARK_OF, build_replicas, read_replica
from workbench.evaluation.runner import UnsupportedTaskError, evaluate, item_prompt
from workbench.evaluation.tasks import TASKS, get_task

AUDIO = "<|audio_bos|><|AUDIO|><|audio_eos|>"
ASR = "Detect the language and recognize the speech: "
# The prompt each task must give Qwen2-Audio (tasks.QWEN2_PROMPTS gives the sources).
EXPECTED = {
    "librispeech-test-other": ASR + "<|en|>",
    "aishell1-test": ASR + "<|zh|>",
    "aishell2-android": ASR + "<|zh|>",
    "covost2-en-de": "Translate the speech into German.",
    "covost2-en-zh": "Translate the speech into Chinese.",
    "covost2-fr-en": "Translate the speech into English.",
    "clotho": "Generate the caption in English:",
    "meld": "Recognize the emotion with keywords in English:",
    "vocalsound": "Classify the human vocal sound to VocalSound in English:",
    "clotho-aqa": "Is there a dog?",
    "cochlscene": "Classify the acoustic scene to CochlScene in English:",
    "tut2017": "Classify the acoustic scene to TUT2017 in English:",
    "nsynth": "Classify the musical note to NSynth in English:",
}


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    torch.set_num_threads(1)    # the shared 2-core machine
    return wb.load(write_qwen2_audio(tmp_path_factory.mktemp("qwen2_audio")))


def an_item(audio: Path | str = "clip.wav") -> Item:
    return Item("x", Path(audio), "ref", question="Is there a dog?")


@pytest.mark.parametrize("name", EXPECTED)
def test_the_runner_gives_qwen2_audio_its_own_prompt(qwen2, name):
    assert item_prompt(qwen2, get_task(name), an_item()) == AUDIO + EXPECTED[name]


def test_every_task_but_srwt_has_a_tagless_qwen2_prompt(qwen2):
    for task in TASKS.values():
        if task.kind == "srwt":
            with pytest.raises(UnsupportedTaskError, match="no time tokens"):
                item_prompt(qwen2, task, an_item())
            continue
        prompt = item_prompt(qwen2, task, an_item())
        assert prompt.startswith(AUDIO) and prompt != AUDIO, task.name
        # Qwen-Audio's tags (the prompt a Qwen-Audio model gets) never reach Qwen2-Audio; only ASR's
        # language token, which the official ASR prompt writes as text.
        assert "<|startoftranscript|>" not in prompt and "<audio>" not in prompt, task.name
        assert prompt != get_task(task.name).prompt(an_item()).render()


def test_qwen2_prompt_reaches_the_model_as_natural_language(qwen2):
    clip = Path(wb.__file__).resolve().parent / "assets" / "demo" / "speech_en.flac"
    prompt = item_prompt(qwen2, get_task("meld"), an_item(clip))
    inputs = qwen2.inputs(prompt, audio=clip)
    text = qwen2.tokenizer.decode(inputs.input_ids[0])
    assert text.endswith("<|audio_eos|>Recognize the emotion with keywords in English:")
    assert len(inputs.audios) == 1 and inputs.audios[0].n_positions > 2   # the clip is in, placeholders expanded


@pytest.mark.slow
def test_qwen2_audio_runs_a_replica_end_to_end(qwen2, tmp_path):
    data = tmp_path / "data"
    build_replicas(data, items_per_dataset=2)
    items = read_replica("librispeech", data)
    result = evaluate(qwen2, BENCHMARK_OF["librispeech"], items, tmp_path / "run", batch_size=2, max_new_tokens=6,
                      progress=False)
    assert [r["id"] for r in result.records] == [item.id for item in items]
    assert {r["prompt"] for r in result.records} == {AUDIO + ASR + "<|en|>"}
    assert result.summary["model"]["family"] == "qwen2-audio"
    assert result.summary["counts"]["generated"] == len(items)
    assert result.summary["batch_check"]["status"] == "passed"
    assert result.metric("WER", "official").value is not None
    # A second run reuses every record: the key holds Qwen2-Audio's prompt.
    again = evaluate(qwen2, BENCHMARK_OF["librispeech"], items, tmp_path / "run", batch_size=2, max_new_tokens=6,
                     progress=False)
    assert again.summary["counts"]["reused"] == len(items) and again.outputs == result.outputs
