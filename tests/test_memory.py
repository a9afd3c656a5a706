"""memory_plan: the bytes it predicts from the config equal the bytes the tensors hold on the tiny fixture
(a trace's captures, a KV cache, the weights), and the published 7B's numbers follow from its config."""
from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache

from workbench.analysis.memory import memory_plan, parameter_count
from workbench.analysis.trace import trace
from workbench.models.cache import cache_kwarg
from workbench.models.qwen_audio.config import QwenAudioConfig
from workbench.models.qwen_audio.official_layout import REAL_CONFIG
from workbench.tags import preset

CAPTURE = ["llm.layers.*.attn.pattern", "llm.layers.*.resid_post", "llm.layers.*.attn.q",
           "encoder.blocks.*.attn.pattern", "encoder.blocks.*.resid_post"]


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return sum(_nbytes(v) for v in value)


@pytest.fixture(scope="module")
def traced(tiny_qwen, tiny_clip):
    t = trace(tiny_qwen, preset("librispeech", lang="en"), tiny_clip, capture=CAPTURE)
    plan = memory_plan(tiny_qwen, t.inputs.length, t.inputs.audios[0].n_samples / 16000).set_index("item")
    return t, plan


@pytest.mark.parametrize(("item", "names"), [
    ("llm.layers.*.attn.pattern", "llm.layers.{}.attn.pattern"),
    ("llm.layers.*.resid_post", "llm.layers.{}.resid_post"),
    ("llm.layers.*.attn.q/k/v/z (each)", "llm.layers.{}.attn.q"),
])
def test_llm_captures_hold_the_predicted_bytes(traced, tiny_qwen, item, names):
    t, plan = traced
    layers = tiny_qwen.config.llm.num_hidden_layers
    assert plan.loc[item, "bytes"] == sum(_nbytes(t[names.format(i)]) for i in range(layers))
    assert plan.loc[item, "exact"]


@pytest.mark.parametrize(("item", "names"), [("encoder.blocks.*.attn.pattern", "encoder.blocks.{}.attn.pattern"),
                                             ("encoder.blocks.*.resid_post", "encoder.blocks.{}.resid_post")])
def test_encoder_captures_hold_the_predicted_bytes(traced, tiny_qwen, item, names):
    t, plan = traced
    blocks = tiny_qwen.config.encoder.n_layer
    assert plan.loc[item, "bytes"] == sum(_nbytes(t[names.format(i)]) for i in range(blocks))


def test_logits_kv_cache_and_weights_hold_the_predicted_bytes(traced, tiny_qwen):
    t, plan = traced
    assert plan.loc["logits='all' (float32)", "bytes"] == _nbytes(t.logits)
    with torch.no_grad():
        audio = tiny_qwen.encode_audio(t.inputs).embeds
        cache = DynamicCache(config=tiny_qwen.llm.config)
        tiny_qwen.llm.model(inputs_embeds=tiny_qwen.embed(t.inputs, audio)[None], use_cache=True,
                            **cache_kwarg(tiny_qwen.llm.model, cache))
    held = sum(_nbytes([layer.keys, layer.values]) for layer in cache.layers)
    assert plan.loc["KV cache (prompt + new tokens)", "bytes"] == held
    encoder = tiny_qwen.encoder
    weights = _nbytes([*encoder.parameters(), *encoder.buffers()])
    assert plan.loc["weights: encoder", "bytes"] == weights
    llm = _nbytes([*tiny_qwen.llm.parameters(), *tiny_qwen.llm.buffers()])
    assert plan.loc["weights: LLM", "bytes"] == llm


def test_the_published_7b():
    counts = parameter_count(QwenAudioConfig.from_official(REAL_CONFIG))
    assert counts["encoder"] - 1500 * 1280 == 640_119_808          # the published count; the sinusoids are a buffer
    plan = memory_plan(REAL_CONFIG, 800, 30.0).set_index("item")   # bfloat16 by default
    assert plan.loc["llm.layers.*.attn.pattern", "bytes"] == 32 * 32 * 800 * 800 * 2
    assert plan.loc["encoder.blocks.*.attn.pattern", "bytes"] == 32 * 20 * 1500 * 1500 * 2
    assert plan.loc["KV cache (prompt + new tokens)", "bytes"] == 32 * 2 * 32 * 800 * 128 * 2
    assert plan.loc["shared audio prefix: keys and values", "bytes"] == 32 * 2 * 32 * 753 * 128 * 2
    assert plan.loc["weights: LLM", "GiB"] == pytest.approx(14.44, abs=0.01)


def test_bad_requests():
    with pytest.raises(ValueError, match="seq_len=100 is shorter than the audio alone"):
        memory_plan(REAL_CONFIG, 100, 30.0)
    with pytest.raises(ValueError, match="audio_seconds=45.*up to 30 s"):
        memory_plan(REAL_CONFIG, 2000, 45)
    with pytest.raises(TypeError, match="memory_plan takes a Qwen-Audio model"):
        memory_plan("qwen", 800)
