"""Activation patching and head knockouts on the official-layout tiny Qwen-Audio and a tiny random Whisper.

Random weights: the scores mean nothing, but the mechanics are exact. Patching a run into itself
changes nothing; patching the last layer's residual stream hands over the source's logits at the
patched positions; a knockout equals zeroing the head's slice by hand; a sweep's cells equal the
single patches they stand for.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from tiny_models import WHISPER_PREFIX

from workbench.analysis.interventions import prompt_inputs
from workbench.analysis.knockout import knockout_logits, knockout_sweep
from workbench.analysis.patching import PatchingResult, patch, patch_sweep
from workbench.analysis.positions import aligned_positions, decode_ids, label_positions
from workbench.errors import ContextTooLongError, PatchingError
from workbench.tags import preset

ASR = preset("librispeech").render()   # <|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>
CAPTION = ASR.replace("<|transcribe|>", "<|caption|>")
SHORTER = ASR.replace("<|en|><|notimestamps|>", "<|notimestamps|>")      # text_lang dropped: one tag fewer
WHISPER_NO_LANG = WHISPER_PREFIX.replace("<|en|>", "")
CONTINUATION = " mister quilting"
ATOL = 1e-5


@pytest.fixture(scope="module")
def qwen(tiny_qwen):
    return tiny_qwen


@pytest.fixture(scope="module")
def clip(tiny_clip) -> str:
    return tiny_clip


@pytest.fixture(scope="module")
def whisper(tiny_whisper):
    return tiny_whisper


@pytest.fixture(params=["qwen", "whisper"])
def case(request, qwen, clip, whisper, noise):
    """(model, audio, prompt A, prompt B of another length, continuation)."""
    if request.param == "qwen":
        return qwen, clip, ASR, SHORTER, CONTINUATION
    return whisper, noise, WHISPER_PREFIX, WHISPER_NO_LANG, " ask not"


def _reference_logits(model, prompt: str, audio, continuation: str) -> torch.Tensor:
    """A plain model.forward of prompt + continuation."""
    if model.family == "whisper":
        return model.forward(prompt + continuation, audio).logits[0]
    return model.forward(f"<audio>x</audio>{prompt}{continuation}", [audio]).logits[0]


def _logprob(logits: torch.Tensor, prompt_length: int, ids: list[int]) -> float:
    rows = logits[prompt_length - 1:prompt_length - 1 + len(ids)].log_softmax(-1)
    return float(rows[torch.arange(len(ids)), torch.tensor(ids)].double().sum())


# --- exactness ----------------------------------------------------------------------------------

def test_unpatched_runs_equal_the_model_forward(case):
    model, audio, a, b, text = case
    run = patch(model, a, b, audio, layer=0, continuation=text)
    torch.testing.assert_close(run.source_logits, _reference_logits(model, a, audio, text), atol=ATOL, rtol=0)
    torch.testing.assert_close(run.target_logits, _reference_logits(model, b, audio, text), atol=ATOL, rtol=0)


@pytest.mark.parametrize("what", ["resid", "head"])
def test_patching_a_run_into_itself_changes_nothing(case, what):
    model, audio, a, _, text = case
    n_layers = 2
    for layer in range(n_layers):
        for head in ([None] if what == "resid" else [0, 3]):
            run = patch(model, a, a, audio, layer=layer, what=what, head=head, continuation=text)
            assert len(run.pairs) == run.logits.shape[0]            # "all" pairs every position with itself
            torch.testing.assert_close(run.logits, run.target_logits, atol=0, rtol=0)
    sweep = patch_sweep(model, a, a, audio, groups=["all", "tags", "text"], continuation=text)
    np.testing.assert_allclose(sweep.scores, sweep.clean, atol=1e-9)


def test_patching_the_last_layer_hands_over_the_source_logits(case):
    model, audio, a, b, text = case
    run = patch(model, a, b, audio, layer=-1, group="all", continuation=text)
    source, target = run.pairs[:, 0], run.pairs[:, 1]
    assert len(set(target.tolist())) == len(target) and run.logits.shape[0] != run.source_logits.shape[0]
    torch.testing.assert_close(run.logits[target], run.source_logits[source], atol=ATOL, rtol=0)
    # the one tag only A has is not patched: B's logits there depend on B alone (and on A only above it)
    untouched = sorted(set(range(run.logits.shape[0])) - set(target.tolist()))
    torch.testing.assert_close(run.logits[untouched], run.target_logits[untouched], atol=ATOL, rtol=0)


def test_head_patch_equals_overwriting_the_slice_by_hand(qwen, clip):
    layer, head = 1, 2
    run = patch(qwen, ASR, CAPTION, clip, layer=layer, what="head", head=head, group="tags", continuation=CONTINUATION)
    o_proj = qwen.llm.model.layers[layer].self_attn.o_proj
    width = o_proj.in_features // 4
    recorded = {}
    handle = o_proj.register_forward_pre_hook(lambda m, args: recorded.__setitem__("x", args[0].clone()))
    _reference_logits(qwen, ASR, clip, CONTINUATION)
    handle.remove()

    def overwrite(module, args):
        x = args[0].clone()
        x[:, run.pairs[:, 1], head * width:(head + 1) * width] = recorded["x"][:, run.pairs[:, 0],
                                                                               head * width:(head + 1) * width]
        return (x,)

    handle = o_proj.register_forward_pre_hook(overwrite)
    try:
        by_hand = _reference_logits(qwen, CAPTION, clip, CONTINUATION)
    finally:
        handle.remove()
    torch.testing.assert_close(run.logits, by_hand, atol=ATOL, rtol=0)
    assert not torch.allclose(run.logits, run.target_logits, atol=1e-4)


# --- knockouts ----------------------------------------------------------------------------------

def _zero_by_hand(model, module, head: int, n_heads: int, prompt: str, audio, method: str = "zero") -> torch.Tensor:
    width = module.in_features // n_heads
    columns = slice(head * width, (head + 1) * width)

    def knock(m, args):
        x = args[0].clone()
        x[..., columns] = 0.0 if method == "zero" else x[..., columns].mean(dim=-2, keepdim=True)
        return (x,)

    handle = module.register_forward_pre_hook(knock)
    try:
        return _reference_logits(model, prompt, audio, "")
    finally:
        handle.remove()


@pytest.mark.parametrize("stack, method", [("llm", "zero"), ("encoder", "zero"), ("llm", "mean")])
def test_qwen_knockout_changes_the_output_and_equals_zeroing_by_hand(qwen, clip, stack, method):
    module = (qwen.llm.model.layers[1].self_attn.o_proj if stack == "llm" else qwen.encoder.blocks[0].attn.out)
    logits = knockout_logits(qwen, ASR, clip, stack=stack, layer=1 if stack == "llm" else 0, head=3, method=method)
    clean = _reference_logits(qwen, ASR, clip, "")
    assert (logits - clean).abs().max() > 1e-3
    torch.testing.assert_close(logits, _zero_by_hand(qwen, module, 3, 4, ASR, clip, method), atol=ATOL, rtol=0)


@pytest.mark.parametrize("stack", ["decoder", "encoder"])
def test_whisper_knockout_equals_zeroing_by_hand(whisper, noise, stack):
    inner = whisper.model.model
    module = (inner.decoder if stack == "decoder" else inner.encoder).layers[1].self_attn.out_proj
    logits = knockout_logits(whisper, WHISPER_PREFIX, noise, stack=stack, layer=1, head=2)
    assert (logits - _reference_logits(whisper, WHISPER_PREFIX, noise, "")).abs().max() > 1e-4
    torch.testing.assert_close(logits, _zero_by_hand(whisper, module, 2, 4, WHISPER_PREFIX, noise), atol=ATOL, rtol=0)


def test_knockout_sweep_cells_equal_single_knockouts(qwen, clip):
    result = knockout_sweep(qwen, ASR, clip, stack="encoder", continuation=CONTINUATION)
    assert result.scores.shape == (2, 4) and result.layers == (0, 1) and result.stack == "encoder"
    assert result.columns == ("head 0", "head 1", "head 2", "head 3") and result.kind == "knockout:zero"
    ids = qwen.tokenizer.encode(CONTINUATION)
    prompt_length = qwen.inputs(f"<audio>x</audio>{ASR}", [clip]).length
    assert result.clean == pytest.approx(_logprob(_reference_logits(qwen, ASR, clip, CONTINUATION), prompt_length, ids),
                                         abs=1e-4)
    module = qwen.encoder.blocks[1].attn.out
    knocked = _zero_by_hand(qwen, module, 2, 4, ASR + CONTINUATION, clip)
    assert result.scores[1, 2] == pytest.approx(_logprob(knocked, prompt_length, ids), abs=1e-4)
    assert result.recovery is None and np.isfinite(result.delta).all()


# --- sweeps -------------------------------------------------------------------------------------

def test_resid_sweep_groups_labels_and_the_audio_check(qwen, clip):
    result = patch_sweep(qwen, ASR, CAPTION, clip, continuation=CONTINUATION)
    assert isinstance(result, PatchingResult)
    assert result.columns == ("audio", "tags", "text") and result.layers == (0, 1) and result.scores.shape == (2, 3)
    # The audio comes before the tags: its residual stream is the same in both runs, so patching it is a no-op.
    np.testing.assert_allclose(result.scores[:, 0], result.clean, atol=1e-9)
    assert np.abs(result.delta[:, 1]).max() > 1e-4                       # the tags carry the change
    assert result.measure == f"log p({CONTINUATION!r})"
    table = result.to_pandas()
    assert list(table.columns) == ["layer", "column", "score", "delta", "recovery"] and len(table) == 6
    run = patch(qwen, ASR, CAPTION, clip, layer=1, group="tags", continuation=CONTINUATION)
    ids = qwen.tokenizer.encode(CONTINUATION)
    n = len(run.positions) - len(ids)
    assert result.scores[1, 1] == pytest.approx(_logprob(run.logits, n, ids), abs=1e-6)
    assert result.source == pytest.approx(_logprob(run.source_logits, n, ids), abs=1e-6)
    assert result.best(2)["delta"].abs().is_monotonic_decreasing


def test_head_sweep_is_layer_by_head_and_matches_single_patches(whisper, noise):
    result = patch_sweep(whisper, WHISPER_PREFIX, WHISPER_NO_LANG, noise, what="head", max_new_tokens=4)
    assert result.scores.shape == (2, 4) and result.stack == "decoder"
    ids = [int(i) for i in whisper.generate(WHISPER_PREFIX, noise, max_new_tokens=4).ids]
    text = whisper.decode(ids)
    run = patch(whisper, WHISPER_PREFIX, WHISPER_NO_LANG, noise, layer=0, what="head", head=1, continuation=text)
    n = len(run.positions) - len(whisper.tokenizer.encode(text, add_special_tokens=False))
    assert result.scores[0, 1] == pytest.approx(
        _logprob(run.logits, n, whisper.tokenizer.encode(text, add_special_tokens=False)), abs=1e-5)


def test_metric_scores_the_patched_greedy_output(whisper, noise):
    expected = whisper.generate(WHISPER_PREFIX, noise, max_new_tokens=5, keep_tags=False).text
    result = patch_sweep(whisper, WHISPER_PREFIX, WHISPER_PREFIX, noise, groups=["tags"], score=len,
                         max_new_tokens=5)
    assert result.outputs.shape == (2, 1) and set(result.outputs.ravel()) == {expected}
    np.testing.assert_array_equal(result.scores, len(expected))
    assert result.clean == result.source == len(expected)
    assert "output" in result.to_pandas().columns


def test_wer_score_against_a_reference(qwen, clip):
    output = qwen.generate(f"<audio>x</audio>{ASR}", [clip], max_new_tokens=3, keep_tags=False).text
    result = patch_sweep(qwen, ASR, ASR, clip, groups=["last"], score="wer", reference=output, max_new_tokens=3)
    np.testing.assert_array_equal(result.scores, 0.0)
    assert result.measure.startswith("WER vs")


def test_plot_has_readable_labels(qwen, clip):
    fig = patch_sweep(qwen, ASR, CAPTION, clip, groups=["tags", "task", "last"], continuation=CONTINUATION).plot()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["tags", "task", "last"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1"]
    assert ax.get_ylabel() == "llm layer" and "<|caption|>" in ax.get_title(loc="left")


def test_plot_refuses_unknown_values_and_recovery_without_a_source(qwen, clip):
    knockouts = knockout_sweep(qwen, ASR, clip, layers=[1], continuation=CONTINUATION)
    assert isinstance(knockouts.plot(), Figure)
    with pytest.raises(ValueError, match="value='recovery' needs a source score .*plot value='delta'"):
        knockouts.plot(value="recovery")
    with pytest.raises(ValueError, match="value='ratio': choose one of \\('delta', 'recovery', 'score'\\)"):
        knockouts.plot(value="ratio")


# --- position alignment -------------------------------------------------------------------------

def test_positions_align_by_group_slot_and_from_the_end(qwen, clip):
    source = qwen.inputs(f"<audio>x</audio>{ASR}", [clip])
    target = qwen.inputs(f"<audio>x</audio>{SHORTER}", [clip])
    a, b = label_positions(qwen, source), label_positions(qwen, target)
    audio = aligned_positions(a, b, "audio")
    assert len(audio) == 148 and (audio[:, 0] == audio[:, 1]).all()       # bos + 146 tokens + eos, 1:1
    tags = aligned_positions(a, b, "tags")
    slots_a = dict(zip(a["position"], a["slot"]))
    slots_b = dict(zip(b["position"], b["slot"]))
    assert [slots_a[s] for s in tags[:, 0]] == [slots_b[t] for t in tags[:, 1]]
    assert "text_lang" not in {slots_a[s] for s in tags[:, 0]}          # only A has it: not patched
    assert len(tags) == 5
    np.testing.assert_array_equal(aligned_positions(a, b, "last"), [[a.shape[0] - 1, b.shape[0] - 1]])
    assert aligned_positions(a, b, "task").tolist() == [[150, 150]]
    assert len(aligned_positions(a, b, "text")) == 0


def test_audio_of_other_lengths_cannot_be_aligned(qwen, clip, noise):
    a = label_positions(qwen, qwen.inputs(f"<audio>x</audio>{ASR}", [clip]))
    b = label_positions(qwen, qwen.inputs(f"<audio>x</audio>{ASR}", [noise]))
    with pytest.raises(PatchingError, match="the source has 148 audio positions and the target 39: .*same clip"):
        aligned_positions(a, b, "audio")


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"what": "mlp"}, "what='mlp': choose one of \\('resid', 'head'\\)"),
    ({"layers": [5]}, "layer=5: the llm has 2 layers"),
    ({"layers": [0, 0]}, "layers=\\[0, 0\\]: give distinct layer indices"),
    ({"groups": "tags"}, "groups='tags': give a non-empty list"),
    ({"groups": ["tagz"]}, "position group 'tagz': choose one of"),
    ({"groups": ["text"], "score": len}, "group 'text' picks no position of both prompts"),
    ({"groups": ["tags"], "positions": [150]}, "give either groups= or positions="),
    ({"positions": [900]}, "positions \\[\\[900, 900\\]\\] fall outside the source"),
    ({"positions": [1.5]}, "give target position ints"),
    ({"score": "bleu"}, "score='bleu': choose one of \\('logprob', 'wer', 'cer'\\)"),
    ({"score": "wer"}, "pass reference= its text"),
    ({"continuation": ""}, "continuation='': give non-empty text"),
])
def test_bad_sweep_requests(qwen, clip, options, message):
    with pytest.raises(PatchingError, match=message):
        patch_sweep(qwen, ASR, CAPTION, clip, max_new_tokens=2, **options)


@pytest.mark.parametrize("options, message", [
    ({"what": "head"}, "head=None: the llm has 4 heads a layer"),
    ({"what": "head", "head": 4}, "head=4: the llm has 4 heads a layer \\(0…3\\)"),
    ({"head": 1}, "head= is for what='head'"),
    ({"layer": -3}, "layer=-3: the llm has 2 layers"),
])
def test_bad_single_patches(qwen, clip, options, message):
    with pytest.raises(PatchingError, match=message):
        patch(qwen, ASR, CAPTION, clip, **{"layer": 0, **options})


@pytest.mark.parametrize("options, message", [
    ({"stack": "mlp"}, "stack='mlp': choose one of"),
    ({"stack": "decoder"}, "this model's token sequence is its 'llm'"),
    ({"method": "resample"}, "method='resample': choose one of \\('zero', 'mean'\\)"),
])
def test_bad_knockouts(qwen, clip, options, message):
    with pytest.raises(PatchingError, match=message):
        knockout_sweep(qwen, ASR, clip, max_new_tokens=2, **options)


def test_whisper_decoder_positions_bound_the_greedy_output(whisper, noise):
    with pytest.raises(ContextTooLongError, match="a decoder prefix of 4 tokens with max_new_tokens=80 exceeds Whisper's 64"):
        patch_sweep(whisper, WHISPER_PREFIX, WHISPER_NO_LANG, noise, max_new_tokens=80)



def test_a_path_clip_keeps_its_name(qwen, clip):
    """One way to put the audio in front of a tag string: a `Path` is referenced by its name, as a
    str is (the copy in `interventions` labelled it `audio_0`), and arrays as `audio_N`."""
    for audio in (clip, Path(clip)):
        inputs = prompt_inputs(qwen, ASR, audio, None)
        assert inputs.text == f"<audio>{clip}</audio>{ASR}" and inputs.audios[0].source == str(clip)
    samples = prompt_inputs(qwen, ASR, np.zeros(16000, dtype=np.float32), None)
    assert samples.text.startswith("<audio>audio_0</audio>")


def test_ids_without_text_are_shown_alike_in_labels_and_scores(qwen, clip, monkeypatch):
    """One decoding with a fallback (positions.decode_ids) for position labels and score labels: an id
    the tokenizer cannot decode is `<id N>` in both (the labels' copy let a TypeError through)."""
    inputs = qwen.inputs(f"<audio>{clip}</audio>{ASR}")
    bad = int(inputs.input_ids[0, -1])
    decode = qwen.decode

    def decode_or_fail(ids, **options):
        if bad in list(ids):
            raise TypeError("no text for this id")
        return decode(ids, **options)

    monkeypatch.setattr(qwen, "decode", decode_or_fail)
    assert label_positions(qwen, inputs)["token"].iloc[-1] == f"<id {bad}>"
    assert decode_ids(qwen, [bad, bad]) == f"<id {bad}><id {bad}>"
