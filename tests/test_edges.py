"""Attention-edge knockouts on the official-layout tiny Qwen-Audio, nano and a tiny random Whisper.

The mechanics are checked against the model run another way: a block in every layer equals the
LLM run with the same 4-D attention mask handed to transformers (every layer then masks the same
pairs), or, for Whisper's cross-attention, the answer rows' cross-attention zeroed by a hook; an
edge that blocks nothing gives the intact score exactly; audio rows blocked in the last layer
change nothing the answer reads.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from tiny_models import WHISPER_PREFIX, write_qwen2_audio

import workbench
from workbench.analysis.edges import edge_knockout, edge_knockout_many
from workbench.analysis.interventions import answer_rows, encode_text, logprob, prompt_inputs
from workbench.audio import SECONDS_PER_TOKEN
from workbench.errors import NotSupportedError, PatchingError
from workbench.tags import preset

ASR = preset("librispeech").render()
CONTINUATION = " mister quilting"


@pytest.fixture(scope="module")
def nano():
    return workbench.load("nano")


def _qwen_score(model, clip, continuation: str, blocked_fn) -> float:
    """log p(continuation) with the LLM run on a 4-D boolean mask: causal, minus `blocked_fn(inputs, n)`."""
    inputs = prompt_inputs(model, ASR, clip, None)
    ids = encode_text(model, continuation)
    full = inputs.extended(ids)
    n = full.length
    allowed = torch.ones(n, n, dtype=torch.bool).tril() & ~blocked_fn(inputs, n)
    embeds = model.embed(full, model.encode_audio(full).embeds)[None]
    with torch.no_grad():
        hidden = model.llm.model(inputs_embeds=embeds, attention_mask=allowed[None, None],
                                 position_ids=torch.arange(n)[None], use_cache=False).last_hidden_state
        logits = model.llm.lm_head(hidden[0]).float()
    return logprob(logits[answer_rows(inputs.length, ids)].double(), ids)


def _answer_to_audio(inputs, n: int) -> torch.Tensor:
    blocked = torch.zeros(n, n, dtype=torch.bool)
    span = inputs.audios[0]
    blocked[inputs.length:, span.start:span.stop] = True     # <audio>, the tokens, </audio>
    blocked[:, 0] = False                                     # position 0 stays readable
    return blocked


def _audio_window(window_s: float):
    def blocked_fn(inputs, n: int) -> torch.Tensor:
        span = inputs.audios[0]
        tokens = torch.arange(span.start + 1, span.stop - 1)             # without <audio> / </audio>
        times = (tokens - tokens[0]).double() * SECONDS_PER_TOKEN
        blocked = torch.zeros(n, n, dtype=torch.bool)
        far = (times[:, None] - times[None, :]).abs() > window_s + 1e-9
        blocked[tokens[:, None], tokens[None, :]] = far
        return blocked
    return blocked_fn


def test_answer_to_audio_in_every_layer_equals_a_4d_mask(tiny_qwen, tiny_clip):
    result = edge_knockout(tiny_qwen, ASR, tiny_clip, edges=[("answer", "audio")], layers=["all"],
                           continuation=CONTINUATION)
    expected = _qwen_score(tiny_qwen, tiny_clip, CONTINUATION, _answer_to_audio)
    intact = _qwen_score(tiny_qwen, tiny_clip, CONTINUATION, lambda inputs, n: torch.zeros(n, n, dtype=torch.bool))
    assert result.scores.shape == (1, 1, 1)
    assert result.scores[0, 0, 0] == pytest.approx(expected, abs=1e-4)
    assert result.clean[0] == pytest.approx(intact, abs=1e-4)
    assert abs(expected - intact) > 1e-3      # the block does something on this model


def test_audio_window_in_every_layer_equals_a_4d_mask(tiny_qwen, tiny_clip):
    result = edge_knockout(tiny_qwen, ASR, tiny_clip, edges=[("audio", "audio>window")], layers=["all"],
                           window_s=0.2, continuation=CONTINUATION)
    expected = _qwen_score(tiny_qwen, tiny_clip, CONTINUATION, _audio_window(0.2))
    assert result.scores[0, 0, 0] == pytest.approx(expected, abs=1e-4)
    assert abs(result.delta[0, 0, 0]) > 1e-4


def test_an_edge_that_blocks_nothing_gives_the_intact_score_exactly(tiny_qwen, tiny_clip):
    # a tag prompt has no free text; a window longer than the clip leaves every audio pair in reach
    result = edge_knockout(tiny_qwen, ASR, tiny_clip, edges=[("text", "audio"), ("audio", "audio>window")],
                           layers=("each", "all"), window_s=60.0, continuation=CONTINUATION)
    assert np.all(result.delta == 0.0)
    table = result.to_pandas()
    assert list(table.columns) == ["layer", "layers", "edge", "score", "delta"]
    assert len(table) == 3 * 2 and set(table["layer"]) == {"0", "1", "all"}


def test_audio_rows_blocked_in_the_last_layer_change_nothing_downstream(nano):
    clip = workbench.demo.demo_path("speech_en")
    result = edge_knockout(nano, preset("librispeech", lang="en"), clip,
                           edges=[("audio", "audio>window"), ("answer", "audio"), ("tags", "audio")], layers=[-1, 0])
    delta = result.delta[0]
    assert result.layers == ("3", "0")
    assert abs(delta[0, 0]) < 1e-5                        # audio rows in layer 3 feed no later position
    assert delta[0, 1] < -1.0 and delta[1, 1] < -1.0      # the answer reads the audio in the first and last layer
    assert np.all(np.isfinite(result.scores))


def test_layer_windows_and_labels(tiny_qwen, tiny_clip):
    result = edge_knockout(tiny_qwen, ASR, tiny_clip, edges=[("answer", "tags")], layers=[range(0, 2), 1, [1, 0]],
                           continuation=CONTINUATION)
    assert result.layers == ("0–1", "1", "0–1") and result.layer_sets == ((0, 1), (1,), (0, 1))
    assert result.scores[0, 0, 0] == result.scores[0, 2, 0]


def test_whisper_answer_to_audio_zeroes_the_cross_attention(tiny_whisper, noise):
    model = tiny_whisper
    result = edge_knockout(model, WHISPER_PREFIX, noise, edges=[("answer", "audio"), ("answer", "tags")],
                           layers=["all"], continuation=" ask not")
    assert result.edges == ("answer→audio", "answer→tags")   # no audio-to-audio edge in a decoder
    inputs = prompt_inputs(model, WHISPER_PREFIX, noise, None)
    ids = encode_text(model, " ask not")

    def zero_answer_rows(module, args):
        x = args[0].clone()
        x[:, inputs.length:] = 0.0
        return (x,)

    handles = [layer.encoder_attn.out_proj.register_forward_pre_hook(zero_answer_rows)
               for layer in model.model.model.decoder.layers]
    try:
        logits = model.forward(WHISPER_PREFIX + " ask not", noise).logits[0]
    finally:
        for handle in handles:
            handle.remove()
    expected = logprob(logits[answer_rows(inputs.length, ids)].double(), ids)
    assert result.scores[0, 0, 0] == pytest.approx(expected, abs=1e-4)
    assert abs(result.delta[0, 0, 0]) > 1e-4


def test_many_clips_give_means_with_bootstrap_cis(tiny_qwen, tiny_clip, noise):
    items = [(ASR, tiny_clip), (ASR, noise)]
    edges = [("answer", "audio"), ("tags", "audio")]
    many = edge_knockout_many(tiny_qwen, items, edges=edges, layers=["each"], continuation=CONTINUATION)
    singles = [edge_knockout(tiny_qwen, p, a, edges=edges, layers=["each"], continuation=CONTINUATION)
               for p, a in items]
    assert many.n == 2 and many.measure == singles[0].measure    # one continuation: one measure
    np.testing.assert_allclose(many.delta, np.concatenate([s.delta for s in singles]), atol=1e-9)
    table = many.to_pandas()
    assert {"delta_low", "delta_high", "n"} <= set(table.columns)
    np.testing.assert_allclose(table["delta"], many.delta.mean(0).ravel(), atol=1e-9)
    assert (table["delta_low"] <= table["delta"] + 1e-12).all() and (table["delta"] <= table["delta_high"] + 1e-12).all()
    assert len(many.per_clip()) == 2 * 2 * 2
    fig = many.plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 3     # heatmap, its colour bar, the CI panel
    assert len(singles[0].plot().axes) == 2


def test_a_metric_score_redecodes_under_the_block(nano):
    clip = workbench.demo.demo_path("speech_en")
    prompt = preset("librispeech", lang="en")
    result = edge_knockout(nano, prompt, clip, edges=[("text", "audio"), ("answer", "audio")], layers=["all"],
                           score="wer", reference="the happy cow wants the blue ball", max_new_tokens=12)
    table = result.to_pandas()
    assert result.clean[0] == 0.0
    assert table["score"].iloc[0] == 0.0 and table["output"].iloc[0] == "the happy cow wants the blue ball"
    assert table["score"].iloc[1] > 0.0 and table["output"].iloc[1] != table["output"].iloc[0]


@pytest.mark.parametrize("edges, layers, message", [
    ([("answer", "speech")], ["all"], "unknown position group 'speech'"),
    ([("answer",)], ["all"], "give (rows, cols)"),
    ([("tags", "audio>window")], ["all"], "rows must be 'audio'"),
    ([("answer", "audio")], [2], "layer=2"),
    ([("answer", "audio")], ["every"], "layer spec 'every'"),
    ([("answer", "audio"), ("answer", "audio")], ["all"], "distinct"),
])
def test_bad_requests(tiny_qwen, tiny_clip, edges, layers, message):
    with pytest.raises(PatchingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        edge_knockout(tiny_qwen, ASR, tiny_clip, edges=edges, layers=layers, continuation=CONTINUATION)


def test_whisper_has_no_audio_rows(tiny_whisper, noise):
    with pytest.raises(PatchingError, match="no positions in its decoder"):
        edge_knockout(tiny_whisper, WHISPER_PREFIX, noise, edges=[("audio", "audio>window")], continuation=" a")


def test_a_family_without_interventions_is_refused(tmp_path, noise):
    model = workbench.load(write_qwen2_audio(tmp_path / "qwen2_audio"))
    with pytest.raises(NotSupportedError, match="edge_knockout"):
        edge_knockout(model, "<|audio_bos|><|AUDIO|><|audio_eos|>hi", noise)
