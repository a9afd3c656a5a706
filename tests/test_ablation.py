"""Tag ablation and the shared-prefix scorer on the official-layout tiny checkpoint.

Random weights: the numbers mean nothing, but every number `ablate` reports must equal what a
plain `model.forward` / `model.generate` of that variant's full prompt gives (1e-4), whatever
the batching, padding and prefix caching did to get it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from workbench.analysis import scoring
from workbench.analysis.ablation import AblationResult, ablate, describe_change
from workbench.errors import TagPromptError
from workbench.models.base import ModelInputs
from workbench.tags import TagPrompt, drop_variants, permute_variants, preset, swap_variants

CLIP = "1272-128104-0000.flac"
TARGETS = {"transcript": " mister quilting", "end": "<|endoftext|>"}
MAX_NEW = 4
ATOL = 1e-4


@pytest.fixture(scope="module")
def model(tiny_qwen):
    return tiny_qwen


@pytest.fixture(scope="module")
def clip(tiny_clip) -> str:
    return tiny_clip


@pytest.fixture(scope="module")
def variants():
    base = preset("librispeech")
    # Different lengths (drop), values (swap) and orders (permute): padding and positions vary.
    return (drop_variants(base)[:3] + swap_variants(base, slot="task", values=["caption"])
            + permute_variants(base)[:1])


@pytest.fixture(scope="module")
def result(model, clip, variants) -> AblationResult:
    return ablate(model, clip, preset("librispeech"), variants=variants, targets=TARGETS, top_k=5,
                  max_new_tokens=MAX_NEW, batch_size=4)


def _reference(model, clip: str, tags: str, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain forward of the full prompt + target: (next-token log-probs, per-token log-probs)."""
    ids = model.tokenizer.encode(target)
    out = model.forward(f"<audio>{clip}</audio>{tags}{target}", logits_to_keep=len(ids) + 1)
    logprobs = out.logits[0, :-1].float().log_softmax(-1)
    return logprobs[0], logprobs[torch.arange(len(ids)), torch.tensor(ids)]


def _kl_js(p_log: np.ndarray, q_log: np.ndarray) -> tuple[float, float]:
    p, q = np.exp(p_log), np.exp(q_log)
    m = (p + q) / 2
    return float(np.sum(p * (p_log - q_log))), float(0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m)))


def test_every_number_equals_a_plain_forward_of_the_full_prompt(model, clip, result):
    base_tags = preset("librispeech").render()
    base_next, _ = _reference(model, clip, base_tags, TARGETS["transcript"])
    base_next = base_next.double().numpy()
    assert len(result.rows) == 6
    for row in result.rows:
        for name, text in TARGETS.items():
            next_logprobs, token_logprobs = _reference(model, clip, row.tags, text)
            np.testing.assert_allclose(row.token_logprobs[name], token_logprobs.numpy(), rtol=0, atol=ATOL)
            assert row.logprob(name) == pytest.approx(float(token_logprobs.sum()), abs=ATOL)
        index = result.rows.index(row)
        np.testing.assert_allclose(result.next_logprobs[index].numpy(), next_logprobs.numpy(), rtol=0, atol=ATOL)
        kl, js = _kl_js(base_next, next_logprobs.double().numpy())
        assert row.kl == pytest.approx(kl, abs=ATOL) and row.js == pytest.approx(js, abs=ATOL)
        delta = np.exp(next_logprobs.double().numpy()) - np.exp(base_next)
        if row.label != "base":
            assert [s.id for s in row.gains] == list(np.argsort(-delta)[:5])
            assert [s.id for s in row.losses] == list(np.argsort(delta)[:5])
            assert all(s.delta > 0 for s in row.gains) and all(s.delta < 0 for s in row.losses)


def test_greedy_outputs_equal_generate(model, clip, result):
    for row in result.rows:
        alone = model.generate(f"<audio>{clip}</audio>{row.tags}", max_new_tokens=MAX_NEW)
        expected = alone.ids + ([alone.stop_token] if alone.stop_token is not None else [])
        assert list(row.output_ids) == expected


def test_the_audio_is_encoded_once_and_the_prefix_run_once(model, clip, variants, monkeypatch):
    encodes, calls = [], []
    encode_audio = model.encode_audio
    monkeypatch.setattr(model, "encode_audio", lambda inputs, **kw: encodes.append(1) or encode_audio(inputs, **kw))

    def record(_, args, kwargs):   # (positions already cached, positions run in this call)
        new = kwargs["inputs_embeds"] if kwargs.get("inputs_embeds") is not None else kwargs["input_ids"]
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        calls.append((cache.get_seq_length(), new.shape[1]))

    handle = model.llm.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        ablate(model, clip, preset("librispeech"), variants=variants, targets=TARGETS, max_new_tokens=MAX_NEW)
    finally:
        handle.remove()
    prefix = model.inputs(f"<audio>{clip}</audio>").length   # <audio> … </audio>
    assert len(encodes) == 1
    assert calls[0] == (0, prefix)                            # the audio prefix, run once
    assert all(cached >= prefix for cached, _ in calls[1:])   # every later call starts from its cache
    assert max(n for _, n in calls[1:]) < prefix


def test_default_target_is_the_base_greedy_output(model, clip, result):
    default = ablate(model, clip, preset("librispeech"), variants="drop", max_new_tokens=MAX_NEW)
    assert list(default.targets) == ["base output"]
    ids = list(result.base.output_ids)
    prompt = model.inputs(f"<audio>{clip}</audio>{preset('librispeech').render()}")
    row = ModelInputs(prompt.text, torch.cat([prompt.input_ids, torch.tensor([ids])], dim=1), prompt.audios)
    logits = model.forward(row, logits_to_keep=len(ids) + 1).logits[0, :-1].float()
    expected = logits.log_softmax(-1)[torch.arange(len(ids)), torch.tensor(ids)]
    np.testing.assert_allclose(default.base.token_logprobs["base output"], expected.numpy(), rtol=0, atol=ATOL)
    assert len(default.variants) == len(drop_variants(preset("librispeech")))


def test_all_generates_each_variant_once_without_the_base(model, clip):
    base = preset("clotho")
    result = ablate(model, clip, base, variants="all", targets=" a dog", max_new_tokens=1)
    tags = [row.tags for row in result.variants]
    assert len(tags) == len(set(tags)) and base.render() not in tags
    generated = {v.prompt_text for v in drop_variants(base) + swap_variants(base) + permute_variants(base)}
    assert set(tags) == generated - {base.render()}
    assert {row.kind for row in result.variants} == {"drop", "swap", "permute"}


def test_hand_written_variants_get_readable_labels(model, clip):
    base = preset("librispeech")
    result = ablate(model, clip, "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>",
                    variants=[preset("librispeech", task="caption"),
                              "<|startoftranscript|><|en|><|transcribe|><|notimestamps|><|wo_itn|>",
                              "<|wo_itn|><|startoftranscript|>"],
                    targets=" mister", max_new_tokens=1)
    assert [row.label for row in result.variants] == [
        "task: transcribe → caption", "drop text_lang", "<|wo_itn|><|startoftranscript|>"]
    assert {row.kind for row in result.variants} == {"custom"}
    assert describe_change(base, "<|startofanalysis|><|en|><|transcribe|><|en|><|notimestamps|>") == \
        "start: transcript → analysis; drop instructions"
    assert describe_change(base, base.render()) == "same tags as base"


def test_label_set_shares_sum_to_one_and_follow_the_logprobs(result):
    shares = result.label_shares()
    assert shares.shape == (len(result.rows), 2)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    for row, share in zip(result.rows, shares):
        odds = np.exp(row.logprob("transcript") - row.logprob("end"))
        assert share[0] / share[1] == pytest.approx(odds, rel=1e-6)


def test_tables(result):
    long = result.to_pandas()
    assert list(long.columns) == ["variant", "kind", "tags", "target", "measure", "value"]
    per_row = 2 + len(TARGETS) * 4     # kl, js; logprob, mean_logprob, delta_logprob, label_share
    assert len(long) == len(result.rows) * per_row
    wide = result.to_pandas(wide=True)
    assert list(wide.index) == [row.label for row in result.rows]
    row = result.variants[2]
    assert wide.loc[row.label, "kl"] == row.kl
    assert wide.loc[row.label, "delta_logprob[end]"] == pytest.approx(row.logprob("end") - result.base.logprob("end"))
    assert wide.loc[row.label, "mean_logprob[transcript]"] == pytest.approx(np.mean(row.token_logprobs["transcript"]))
    assert wide.loc["base", "output"] == result.base.output
    shifts = result.shifts()
    assert set(shifts["direction"]) == {"gain", "loss"} and (shifts["rank"] <= 5).all()


def test_plot_draws_the_heatmap_and_label_bars(result):
    fig = result.plot()
    assert isinstance(fig, Figure)
    heat, bars = fig.axes[:2]
    assert [t.get_text() for t in heat.get_yticklabels()] == [row.label for row in result.rows]
    assert [t.get_text() for t in heat.get_xticklabels()] == ["KL", "JS", "Δ log p(transcript)", "Δ log p(end)"]
    assert len(bars.patches) == len(result.rows) * len(TARGETS)


def test_scorer_is_batch_invariant_and_checks_its_prompts(model, clip):
    prefix_inputs = scoring.audio_prefix(model, clip)
    prompts = [scoring.with_tags(model, prefix_inputs, v.prompt_text) for v in drop_variants(preset("librispeech"))]
    targets = [model.tokenizer.encode(" mister quilting")[:n] for n in range(len(prompts))]   # lengths 0…5
    one = scoring.score_targets(model, prompts, targets, batch_size=1)
    all_ = scoring.score_targets(model, prompts, targets, batch_size=len(prompts))
    for a, b, t in zip(one, all_, targets):
        assert a.token_logprobs.shape == (len(t),)
        torch.testing.assert_close(a.token_logprobs, b.token_logprobs, rtol=0, atol=ATOL)
        torch.testing.assert_close(a.next_logprobs, b.next_logprobs, rtol=0, atol=ATOL)
    other = scoring.audio_prefix(model, np.zeros(16000, dtype=np.float32))
    with pytest.raises(scoring.SharedAudioError, match="same audio"):
        scoring.score_targets(model, [prompts[0], scoring.with_tags(model, other, "<|en|>")], [[], []])
    with pytest.raises(ValueError, match="2 prompts but 1 targets"):
        scoring.score_targets(model, prompts[:2], [[]])
    with pytest.raises(ValueError, match="contain <audio>"):
        scoring.with_tags(model, prefix_inputs, "<audio>x.wav</audio>")


def test_bad_inputs_say_what_to_do(model, clip):
    base = preset("librispeech")
    with pytest.raises(ValueError, match="variants='dorp'"):
        ablate(model, clip, base, variants="dorp")
    with pytest.raises(ValueError, match="not a tag sequence TagPrompt can parse"):
        ablate(model, clip, "What is this?", variants="drop")
    with pytest.raises(ValueError, match="target 'x' is ''"):
        ablate(model, clip, base, variants="drop", targets={"x": ""})
    with pytest.raises(TypeError, match="targets=3"):
        ablate(model, clip, base, variants="drop", targets=3)
    with pytest.raises(ValueError, match="top_k=0"):
        ablate(model, clip, base, top_k=0)
    with pytest.raises(ValueError, match=r"\['same tags as base'\] occur more than once"):
        ablate(model, clip, base, variants=[base, base.render()])
    with pytest.raises(TypeError, match="variant 5 is a int"):
        ablate(model, clip, base, variants=[5])
    with pytest.raises(TypeError, match="cannot run ablate on a object: give a model workbench.load returns"):
        ablate(object(), clip, base)
    with pytest.raises(TypeError, match="audio must be a path"):
        ablate(model, 3.5, base)
    with pytest.raises(TagPromptError):
        TagPrompt.parse("<|en|><|startoftranscript|>")   # why the reordered variant above has a raw label


def test_scorer_errors_say_what_to_do(model, clip):
    prefix_inputs = scoring.audio_prefix(model, clip)
    asr = [scoring.with_tags(model, prefix_inputs, preset("librispeech").render()),
           scoring.with_tags(model, prefix_inputs, preset("librispeech", task="translate").render())]
    with pytest.raises(ValueError, match="batch_size=0"):
        scoring.score_targets(model, asr, [[], []], batch_size=0)
    with pytest.raises(ValueError, match="next_token has 1 flags for 2 prompts"):
        scoring.score_targets(model, asr, [[], []], next_token=[True])
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        scoring.greedy_batch(model, asr, max_new_tokens=0)
    with pytest.raises(ValueError, match="got no prompts"):
        scoring.shared_prefix(model, [])
    with pytest.raises(TypeError, match="tags must be a str"):
        scoring.with_tags(model, prefix_inputs, 5)
    shared = scoring.shared_prefix(model, asr)     # covers <|startoftranscript|><|en|> too
    caption = scoring.with_tags(model, prefix_inputs, preset("clotho").render())
    with pytest.raises(ValueError, match="does not extend the shared prefix"):
        scoring.score_targets(model, [caption], [[]], prefix=shared)
    with pytest.raises(ValueError, match="does not extend the shared prefix"):
        scoring.greedy_batch(model, [caption], max_new_tokens=1, prefix=shared)
    with pytest.raises(ValueError, match="needs 2154 positions, more than the 2048"):
        scoring.score_targets(model, asr[:1], [[100] * 2000])
    with pytest.raises(TypeError, match="base_prompt must be a TagPrompt"):
        ablate(model, clip, 5)
    with pytest.raises(ValueError, match="non-empty list"):
        ablate(model, clip, preset("librispeech"), variants=[])


def test_audio_prefix_takes_an_array_with_its_rate(model, clip):
    """(array, rate) is one audio, resampled to 16 kHz, as everywhere else audio is accepted."""
    from workbench.audio import load_audio

    at_8k = load_audio(clip, sr=8000)
    prefix = scoring.audio_prefix(model, (at_8k, 8000))
    expected = load_audio((at_8k, 8000))
    assert prefix.audios[0].n_samples == len(expected) == 2 * len(at_8k)
    torch.testing.assert_close(prefix.audios[0].mel, model.inputs("<audio>x</audio>", audio=[expected]).audios[0].mel)
