"""Direct logit attribution on the official-layout tiny Qwen-Audio, nano, a tiny Whisper and a tiny Qwen2-Audio.

Checked against the model and against a computation by hand: the components sum to the model's own
logit (or logit difference) with the norm scale frozen; each layer's attention share is its heads'
shares plus its bias's; one head's share equals its z @ W_O slice through the frozen norm and the
unembedding, computed here from hooked tensors.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from tiny_models import WHISPER_PREFIX, write_qwen2_audio

import workbench
from workbench.analysis.dla import direct_logit_attribution
from workbench.errors import PatchingError
from workbench.tags import preset

ASR = preset("librispeech").render()


@pytest.fixture(scope="module")
def nano():
    return workbench.load("nano")


def _sums_to_the_logit(result, rtol: float = 1e-5) -> None:
    np.testing.assert_allclose(result.total, result.logits, rtol=rtol, atol=1e-4)
    np.testing.assert_allclose(result.attn, result.heads.sum(-1) + result.attn_bias, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("position", ["last", "audio", "answer", -3, [0, 5]])
def test_components_sum_to_the_logit_on_the_fixture(tiny_qwen, tiny_clip, position):
    result = direct_logit_attribution(tiny_qwen, ASR, tiny_clip, position=position, max_new_tokens=4)
    _sums_to_the_logit(result)
    assert result.cross is None and result.heads.shape[1:] == (2, 4)


def test_components_sum_to_the_logit_on_nano(nano):
    clip = workbench.demo.demo_path("speech_en")
    result = direct_logit_attribution(nano, preset("librispeech", lang="en"), clip, position="answer")
    _sums_to_the_logit(result)
    assert "".join(result.targets) == "the happy cow wants the blue ball"
    assert result.logits.min() > 5.0          # nano is sure of its transcript


def test_a_head_equals_its_z_times_w_o_through_the_frozen_norm(tiny_qwen, tiny_clip):
    model, layer, head = tiny_qwen, 1, 2
    result = direct_logit_attribution(model, ASR, tiny_clip)
    kept = {}
    o_proj = model.llm.model.layers[layer].self_attn.o_proj
    handles = [o_proj.register_forward_pre_hook(lambda m, args: kept.__setitem__("z", args[0][0, -1].double())),
               model.llm.model.norm.register_forward_pre_hook(
                   lambda m, args: kept.__setitem__("x", args[0][0, -1].double()))]
    try:
        logits = model.forward(f"<audio>x</audio>{ASR}", [tiny_clip]).logits[0, -1]
    finally:
        for handle in handles:
            handle.remove()
    target = int(logits.argmax())
    head_dim = o_proj.in_features // 4
    z = kept["z"][head * head_dim:(head + 1) * head_dim]
    out = o_proj.weight.double()[:, head * head_dim:(head + 1) * head_dim] @ z
    norm = model.llm.model.norm
    rms = torch.sqrt(kept["x"].pow(2).mean() + norm.variance_epsilon)
    by_hand = float((out / rms * norm.weight.double()) @ model.llm.lm_head.weight.double()[target])
    assert result.target_ids == (target,)
    assert result.heads[0, layer, head] == pytest.approx(by_hand, rel=1e-9, abs=1e-12)
    assert result.scale[0] == pytest.approx(float(rms), rel=1e-12)


def test_a_logit_difference_is_the_difference_of_two_attributions(tiny_qwen, tiny_clip):
    both = direct_logit_attribution(tiny_qwen, ASR, tiny_clip, target=" yes", versus=" no")
    yes = direct_logit_attribution(tiny_qwen, ASR, tiny_clip, target=" yes")
    no = direct_logit_attribution(tiny_qwen, ASR, tiny_clip, target=" no")
    _sums_to_the_logit(both)
    assert both.measure == "logit difference"
    np.testing.assert_allclose(both.mlp, yes.mlp - no.mlp, atol=1e-9)
    np.testing.assert_allclose(both.heads, yes.heads - no.heads, atol=1e-9)
    assert both.logits[0] == pytest.approx(yes.logits[0] - no.logits[0], abs=1e-4)


@pytest.fixture
def biased_whisper(tiny_whisper):
    """The tiny Whisper with random biases in its final LayerNorm and attention output projections
    (a fresh model has them at 0, which would hide a bias folded wrongly); restored afterwards."""
    decoder = tiny_whisper.model.model.decoder
    biases = [decoder.layer_norm.bias] + [layer.self_attn.out_proj.bias for layer in decoder.layers] + \
        [layer.encoder_attn.out_proj.bias for layer in decoder.layers]
    before = [b.detach().clone() for b in biases]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for b in biases:
            b.copy_(0.5 * torch.randn(b.shape, generator=generator))
    yield tiny_whisper
    with torch.no_grad():
        for b, old in zip(biases, before):
            b.copy_(old)


def test_whisper_decoder_with_cross_attention_and_layernorm(biased_whisper, noise):
    tiny_whisper = biased_whisper
    result = direct_logit_attribution(tiny_whisper, WHISPER_PREFIX + " ask", noise, position=[-1, -2])
    _sums_to_the_logit(result)
    assert result.cross is not None and result.cross_heads.shape == (2, 2, 4)
    assert np.abs(result.bias).max() > 0 and np.abs(result.attn_bias).max() > 0   # LayerNorm / out_proj biases
    np.testing.assert_allclose(result.cross, result.cross_heads.sum(-1) + _cross_bias(tiny_whisper, result),
                               atol=1e-6)


def _cross_bias(model, result) -> np.ndarray:
    """The cross-attention's share minus its heads': its output projection's bias, folded by hand."""
    layers = model.model.model.decoder.layers
    norm = model.model.model.decoder.layer_norm
    w_u = model.model.proj_out.weight.detach().double()
    out = np.zeros((len(result.positions), len(layers)))
    for p, target in enumerate(result.target_ids):
        direction = norm.weight.detach().double() * w_u[target] / result.scale[p]
        for i, layer in enumerate(layers):
            b = layer.encoder_attn.out_proj.bias.detach().double()
            out[p, i] = float((b - b.mean()) @ direction)
    return out


def test_qwen2_audio_llm(tmp_path, noise):
    model = workbench.load(write_qwen2_audio(tmp_path / "qwen2_audio"))
    result = direct_logit_attribution(model, "<|audio_bos|><|AUDIO|><|audio_eos|>hi", noise, position="audio")
    _sums_to_the_logit(result)
    assert len(result.positions) > 10


def test_table_and_figure(tiny_qwen, tiny_clip):
    result = direct_logit_attribution(tiny_qwen, ASR, tiny_clip, position="audio")
    table = result.to_pandas(heads=True)
    first = table[table["position"] == result.positions[0]]
    assert set(first["component"]) == {"embed", "attn", "head", "mlp", "bias"}
    assert first["value"][first["component"] != "head"].sum() == pytest.approx(result.logits[0], abs=1e-4)
    assert len(result.to_pandas()) == len(result.positions) * (1 + 2 * 2 + 1)
    assert isinstance(result.plot(), Figure) and isinstance(result.plot(position=0), Figure)


@pytest.mark.parametrize("options, message", [
    ({"position": 10_000}, "position=10000"),
    ({"position": "speech"}, "speech"),
    ({"target": ""}, "target=''"),
    ({"target": 10 ** 9}, "not a token id"),
    ({"target": " yes", "versus": " yes"}, "same token"),
    ({"position": "answer", "target": " yes"}, "leave target=None"),
])
def test_bad_requests(tiny_qwen, tiny_clip, options, message):
    with pytest.raises(Exception, match=message) as error:
        direct_logit_attribution(tiny_qwen, ASR, tiny_clip, **options)
    assert isinstance(error.value, (PatchingError, workbench.errors.TraceRequestError))
