"""captum attribution over tag slots and audio time, against hand computations (tiny checkpoint).

Tag slots: FeatureAblation must equal dropping each slot by hand and differencing plain
forwards; Shapley values must add up to f(all tags) − f(no tags). Audio: occlusion must equal
hand-occluded embeddings run through the LLM; integrated gradients must equal the
Gauss–Legendre sum of gradients computed by hand.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from matplotlib.figure import Figure

from workbench.analysis.attribution import AudioAttribution, attribute_audio, attribute_tags
from workbench.audio import SECONDS_PER_TOKEN
from workbench.errors import TagPromptError
from workbench.models.base import ModelInputs
from workbench.tags import preset

CLIP = "1272-128104-0000.flac"
TARGET = " mister quilting"
ATOL = 1e-4


@pytest.fixture(scope="module")
def model(tiny_qwen):
    return tiny_qwen


@pytest.fixture(scope="module")
def clip(tiny_clip) -> str:
    return tiny_clip


def _logprob(model, clip: str, tags: str, target: str = TARGET) -> float:
    """log p(target | audio, tags) from one plain forward of the full prompt."""
    ids = model.tokenizer.encode(target)
    logits = model.forward(f"<audio>{clip}</audio>{tags}{target}", logits_to_keep=len(ids) + 1).logits[0, :-1]
    return float(logits.float().log_softmax(-1)[torch.arange(len(ids)), torch.tensor(ids)].sum())


# --- tag slots ---------------------------------------------------------------------------------

def test_feature_ablation_equals_dropping_each_slot_by_hand(model, clip):
    prompt = preset("librispeech")
    result = attribute_tags(model, clip, prompt, target=TARGET, methods=["ablation"])
    slots = prompt.slots()
    full = _logprob(model, clip, prompt.render())
    expected = [full - _logprob(model, clip, "".join(t for j, (_, t) in enumerate(slots) if j != i))
                for i in range(len(slots))]
    np.testing.assert_allclose(result.scores["ablation"], expected, rtol=0, atol=ATOL)
    assert result.logprob == pytest.approx(full, abs=ATOL)
    assert result.baselines == {slot: "drop" for slot, _ in slots}


def test_shapley_values_add_up_to_all_tags_minus_none(model, clip):
    prompt = preset("clotho")
    result = attribute_tags(model, clip, prompt, target=TARGET, methods=["shapley"], n_samples=3)
    total = _logprob(model, clip, prompt.render()) - _logprob(model, clip, "")
    assert float(np.sum(result.scores["shapley"])) == pytest.approx(total, abs=ATOL)
    again = attribute_tags(model, clip, prompt, target=TARGET, methods=["shapley"], n_samples=3)
    np.testing.assert_array_equal(again.scores["shapley"], result.scores["shapley"])   # seeded


def test_neutral_baseline_replaces_the_language_slots(model, clip):
    prompt = preset("librispeech")
    result = attribute_tags(model, clip, prompt, target=TARGET, methods=["ablation"], baseline="neutral")
    assert result.baselines["audio_lang"] == result.baselines["text_lang"] == "<|unknown|>"
    assert result.baselines["task"] == "drop"
    full = _logprob(model, clip, prompt.render())
    unknown_audio = prompt.render().replace("<|en|>", "<|unknown|>", 1)
    assert result.scores["ablation"][1] == pytest.approx(full - _logprob(model, clip, unknown_audio), abs=ATOL)
    chosen = attribute_tags(model, clip, prompt, target=TARGET, methods=["ablation"], baseline={"task": "caption"})
    caption = prompt.render().replace("<|transcribe|>", "<|caption|>")
    assert chosen.baselines["task"] == "<|caption|>"
    assert chosen.scores["ablation"][2] == pytest.approx(full - _logprob(model, clip, caption), abs=ATOL)


def test_without_a_target_the_greedy_output_is_scored(model, clip):
    prompt = preset("librispeech")
    result = attribute_tags(model, clip, prompt, methods=["ablation"], max_new_tokens=3)
    greedy = model.generate(f"<audio>{clip}</audio>{prompt.render()}", max_new_tokens=3)
    assert result.target == model.decode(greedy.ids) and len(greedy.ids) == 3
    table = result.to_pandas()
    assert list(table.columns) == ["slot", "tags", "baseline", "method", "attribution"]
    assert list(table["slot"]) == [slot for slot, _ in prompt.slots()]
    fig = result.plot()
    assert isinstance(fig, Figure)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][2] == "task  <|transcribe|>"


def test_tag_attribution_errors(model, clip):
    prompt = preset("librispeech")
    with pytest.raises(ValueError, match="methods=\\['lime'\\]"):
        attribute_tags(model, clip, prompt, methods=["lime"])
    with pytest.raises(ValueError, match="baseline names slot\\(s\\) \\['question'\\]"):
        attribute_tags(model, clip, prompt, baseline={"question": "why?"})
    with pytest.raises(ValueError, match="baseline='zero'"):
        attribute_tags(model, clip, prompt, baseline="zero")
    with pytest.raises(TagPromptError, match="task='singing' is not allowed"):
        attribute_tags(model, clip, prompt, baseline={"task": "singing"})
    with pytest.raises(TagPromptError, match="needs a prompt made of tag slots"):
        attribute_tags(model, clip, "What is this?")
    with pytest.raises(ValueError, match="target=''"):
        attribute_tags(model, clip, prompt, target="")


# --- audio time ----------------------------------------------------------------------------------

def _audio_embeds(model, clip, tags=None):
    """The spliced input embeddings of prompt + target, the target's ids and where the audio tokens sit."""
    tags = tags or preset("librispeech").render()
    prompt = model.inputs(f"<audio>{clip}</audio>{tags}")
    ids = model.tokenizer.encode(TARGET)
    row = ModelInputs(prompt.text, torch.cat([prompt.input_ids, torch.tensor([ids])], dim=1), prompt.audios)
    embeds = model.embed(row, model.encode_audio(prompt).embeds)
    span = prompt.audios[0]
    return embeds, ids, prompt.length, slice(span.start + 1, span.stop - 1)


def _f(model, embeds, ids, length) -> torch.Tensor:
    logits = model.llm(inputs_embeds=embeds[None]).logits[0, length - 1:-1].float()
    return logits.log_softmax(-1)[torch.arange(len(ids)), torch.tensor(ids)].sum()


def test_occlusion_equals_occluding_by_hand(model, clip):
    window = 7
    result = attribute_audio(model, clip, preset("librispeech"), target=TARGET, window=window)
    embeds, ids, length, audio = _audio_embeds(model, clip)
    n_tokens = audio.stop - audio.start
    assert len(result.scores) == n_tokens and n_tokens % window   # a shorter last window exists
    with torch.no_grad():
        full = _f(model, embeds, ids, length)
        for start in (0, 7 * 9, (n_tokens // window) * window):   # first, middle, the short last window
            occluded = embeds.clone()
            occluded[audio.start + start: min(audio.start + start + window, audio.stop)] = 0
            expected = float(full - _f(model, occluded, ids, length))
            np.testing.assert_allclose(result.scores[start:start + window], expected, rtol=0, atol=ATOL)
    assert result.logprob == pytest.approx(float(full), abs=ATOL)


def test_occlusion_with_the_mean_fill(model, clip):
    result = attribute_audio(model, clip, preset("librispeech"), target=TARGET, window=50, fill="mean")
    embeds, ids, length, audio = _audio_embeds(model, clip)
    with torch.no_grad():
        occluded = embeds.clone()
        occluded[audio.start + 50:audio.start + 100] = embeds[audio].mean(0)
        expected = float(_f(model, embeds, ids, length) - _f(model, occluded, ids, length))
    np.testing.assert_allclose(result.scores[50:100], expected, rtol=0, atol=ATOL)


def test_integrated_gradients_equal_the_hand_computed_integral(model, clip):
    n_steps = 6
    result = attribute_audio(model, clip, preset("librispeech"), target=TARGET, method="integrated_gradients",
                             n_steps=n_steps, batch_size=4)
    embeds, ids, length, audio = _audio_embeds(model, clip)
    x = embeds[audio].detach()
    steps, alphas = approximation_parameters("gausslegendre")
    total = torch.zeros_like(x)
    for weight, alpha in zip(steps(n_steps), alphas(n_steps)):
        point = (alpha * x).requires_grad_(True)   # zero baseline
        moved = torch.cat([embeds[:audio.start].detach(), point, embeds[audio.stop:].detach()])
        grad, = torch.autograd.grad(_f(model, moved, ids, length), point)
        total += weight * grad
    expected = (x * total).sum(-1)
    np.testing.assert_allclose(result.scores, expected.numpy(), rtol=0, atol=ATOL)
    with torch.no_grad():
        change = float(_f(model, embeds, ids, length) - _f(model, torch.cat(
            [embeds[:audio.start], torch.zeros_like(x), embeds[audio.stop:]]), ids, length))
    assert result.convergence_delta == pytest.approx(result.scores.sum() - change, abs=ATOL)


def test_audio_attribution_table_and_plot_share_seconds(model, clip):
    result = attribute_audio(model, clip, preset("librispeech"), target=TARGET, window=25)
    table = result.to_pandas()
    assert list(table.columns) == ["token", "start_s", "end_s", "score"]
    np.testing.assert_allclose(table["start_s"], np.arange(len(table)) * SECONDS_PER_TOKEN)
    fig = result.plot()
    mel_ax, strip_ax = fig.axes[:2]     # the two panels; colorbars and the token axis come after
    assert mel_ax.get_title().startswith("log-mel")
    assert strip_ax.get_shared_x_axes().joined(mel_ax, strip_ax)
    assert strip_ax.get_xlabel() == "time (s)"
    left, right = strip_ax.images[0].get_extent()[:2]
    assert (left, right) == (0, pytest.approx(len(result.scores) * SECONDS_PER_TOKEN))
    assert isinstance(result, AudioAttribution) and result.mel.shape[1] == result.n_samples // 160


def test_audio_attribution_errors(model, clip):
    prompt = preset("librispeech")
    with pytest.raises(ValueError, match="method='saliency'"):
        attribute_audio(model, clip, prompt, method="saliency")
    with pytest.raises(ValueError, match="fill='noise'"):
        attribute_audio(model, clip, prompt, fill="noise")
    with pytest.raises(ValueError, match="window=0"):
        attribute_audio(model, clip, prompt, window=0)
    with pytest.raises(ValueError, match="window=1000 tokens is longer than the clip's 146"):
        attribute_audio(model, clip, prompt, target=TARGET, window=1000)
    with pytest.raises(ValueError, match="audio_index=1 but the prompt has 1 audio"):
        attribute_audio(model, clip, prompt, audio_index=1)
