"""resid_pre, mlp.out and per-head q / k / v / z on every family, each against a direct computation:
the stream before layer i+1 is the stream after layer i; resid_post = resid_pre + attn.out + mlp.out;
softmax(q·kᵀ/√d, masked) is the pattern; pattern @ v is z; z (heads side by side) through the output
projection is attn.out; q is the projection of the normed stream (rotary embeddings applied in the
Qwen LLMs). On the official-layout tiny Qwen-Audio fixture and tiny random Whisper / Qwen2-Audio."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import WHISPER_PREFIX, write_qwen2_audio, write_whisper
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

import workbench
from workbench.analysis.trace import trace
from workbench.demo import demo_path
from workbench.errors import TraceRequestError

ASR = workbench.preset("librispeech", lang="en")
ATOL = dict(atol=2e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path):
    return workbench.load(tiny_dir / "checkpoint")


@pytest.fixture(scope="module")
def v1(tiny, tiny_clip):
    return trace(tiny, ASR, tiny_clip, capture=["llm.*", "encoder.blocks.*"])


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    return workbench.load(write_whisper(tmp_path_factory.mktemp("whisper")))


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return workbench.load(write_qwen2_audio(tmp_path_factory.mktemp("qwen2_audio")))


def _one(x):
    """The tensor of a sequence point, or the single audio's tensor of an encoder point."""
    return x[0] if isinstance(x, list) else x


def check_stack(t, prefix: str, n_layers: int, attn: str = "attn", causal: bool = True,
                adds: tuple[str, ...] = ("attn.out", "mlp.out")) -> None:
    """The identities every layer of a stack satisfies, on a trace that captured all of it; `adds`:
    what the layer adds to the residual stream."""
    for i in range(n_layers):
        base = f"{prefix}.{i}"
        pre, post = _one(t[f"{base}.resid_pre"]), _one(t[f"{base}.resid_post"])
        if i + 1 < n_layers:
            torch.testing.assert_close(_one(t[f"{prefix}.{i + 1}.resid_pre"]), post, atol=0, rtol=0)
        torch.testing.assert_close(pre + sum(_one(t[f"{base}.{add}"]) for add in adds), post, **ATOL)
        q, k, v, z = (_one(t[f"{base}.{attn}.{part}"]) for part in "qkvz")
        pattern = _one(t[f"{base}.{attn}.pattern"])
        heads, length, head_dim = q.shape
        assert k.shape == v.shape == (heads, pattern.shape[-1], head_dim) and z.shape == q.shape
        scores = q @ k.transpose(1, 2) / head_dim ** 0.5
        if causal:
            scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
        torch.testing.assert_close(scores.softmax(-1), pattern, **ATOL)
        torch.testing.assert_close(pattern @ v, z, **ATOL)


def check_output_projection(t, name: str, out_proj: torch.nn.Module) -> None:
    z = _one(t[f"{name}.z"])
    joined = z.transpose(0, 1).flatten(1)          # (rows, heads · head_dim), heads side by side
    torch.testing.assert_close(torch.nn.functional.linear(joined, out_proj.weight, out_proj.bias),
                               _one(t[f"{name}.out"]), **ATOL)


def test_qwen_audio_v1_llm_points(tiny, v1):
    layers = tiny.llm.model.layers
    torch.testing.assert_close(v1["llm.layers.0.resid_pre"], v1["llm.embed"], atol=0, rtol=0)
    check_stack(v1, "llm.layers", len(layers))
    for i, layer in enumerate(layers):
        check_output_projection(v1, f"llm.layers.{i}.attn", layer.self_attn.o_proj)
    # q and k are after rotary embeddings: the projections of the normed stream, rotated by position.
    layer, attn = layers[1], layers[1].self_attn
    with torch.no_grad():
        x = layer.input_layernorm(v1["llm.layers.1.resid_pre"])[None]
        positions = torch.arange(x.shape[1])[None]
        cos, sin = tiny.llm.model.rotary_emb(x, positions)
        q = attn.q_proj(x).unflatten(-1, (-1, attn.head_dim)).transpose(1, 2)
        k = attn.k_proj(x).unflatten(-1, (-1, attn.head_dim)).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(v1["llm.layers.1.attn.q"], q[0], **ATOL)
    torch.testing.assert_close(v1["llm.layers.1.attn.k"], k[0], **ATOL)
    assert not torch.allclose(q[0], attn.q_proj(x).unflatten(-1, (-1, attn.head_dim)).transpose(1, 2)[0])


def test_qwen_audio_v1_encoder_points(tiny, v1):
    blocks = tiny.encoder.blocks
    assert v1["encoder.blocks.0.attn.q"][0].shape == (4, 293, 8)
    check_stack(v1, "encoder.blocks", len(blocks), causal=False)
    for i, block in enumerate(blocks):
        check_output_projection(v1, f"encoder.blocks.{i}.attn", block.attn.out)
        with torch.no_grad():   # q, k, v are the unscaled projections of the normed stream
            x = block.attn_ln(v1[f"encoder.blocks.{i}.resid_pre"][0])
            v = block.attn.value(x).unflatten(-1, (4, -1)).transpose(0, 1)
        torch.testing.assert_close(v1[f"encoder.blocks.{i}.attn.v"][0], v, **ATOL)


def test_rows_cols_heads_select_per_head_tensors(tiny, tiny_clip, v1):
    t = trace(tiny, ASR, tiny_clip, capture="llm.layers.0.attn.*", rows="tags", cols="audio", heads=[2, 0])
    rows, cols = t.rows, t.cols
    torch.testing.assert_close(t["llm.layers.0.attn.q"], v1["llm.layers.0.attn.q"][[2, 0]][:, rows])
    torch.testing.assert_close(t["llm.layers.0.attn.z"], v1["llm.layers.0.attn.z"][[2, 0]][:, rows])
    torch.testing.assert_close(t["llm.layers.0.attn.k"], v1["llm.layers.0.attn.k"][[2, 0]][:, cols])
    torch.testing.assert_close(t["llm.layers.0.attn.v"], v1["llm.layers.0.attn.v"][[2, 0]][:, cols])
    torch.testing.assert_close(t.logits, v1.logits, atol=1e-5, rtol=0)     # capturing changes nothing
    with pytest.raises(TraceRequestError, match="heads=\\[9\\]: give distinct head indices in 0…3"):
        trace(tiny, ASR, tiny_clip, capture="llm.layers.0.attn.q", heads=[9])


def test_whisper_points(whisper):
    t = trace(whisper, WHISPER_PREFIX, str(demo_path("speech_en")), generate=2,
              capture=["decoder.*", "encoder.layers.*"])
    decoder, encoder = whisper.model.model.decoder, whisper.model.model.encoder
    check_stack(t, "decoder.layers", 2, attn="self_attn", adds=("self_attn.out", "cross_attn.out", "mlp.out"))
    check_stack(t, "encoder.layers", 2, causal=False)
    for i in range(2):
        check_output_projection(t, f"decoder.layers.{i}.self_attn", decoder.layers[i].self_attn.out_proj)
        check_output_projection(t, f"decoder.layers.{i}.cross_attn", decoder.layers[i].encoder_attn.out_proj)
        check_output_projection(t, f"encoder.layers.{i}.attn", encoder.layers[i].self_attn.out_proj)
        # cross-attention: q over decoder rows, k / v over the 1500 encoder frames
        q, k, v = (t[f"decoder.layers.{i}.cross_attn.{p}"] for p in "qkv")
        assert k.shape == (4, 1500, 8)
        pattern = t[f"decoder.layers.{i}.cross_attn.pattern"]
        torch.testing.assert_close((q @ k.transpose(1, 2) / 8 ** 0.5).softmax(-1), pattern, **ATOL)
        torch.testing.assert_close(pattern @ v, t[f"decoder.layers.{i}.cross_attn.z"], **ATOL)
    with torch.no_grad():   # Whisper's q is its projection, unscaled (no rotary embeddings)
        layer = decoder.layers[1]
        q = layer.self_attn.q_proj(layer.self_attn_layer_norm(t["decoder.layers.1.resid_pre"]))
    torch.testing.assert_close(t["decoder.layers.1.self_attn.q"], q.unflatten(-1, (4, -1)).transpose(0, 1), **ATOL)


def test_qwen2_audio_points_share_key_heads(qwen2):
    t = trace(qwen2, "<audio>a</audio>Caption:", str(demo_path("speech_en")), capture=["llm.*", "encoder.layers.*"])
    language = qwen2.model.model.language_model
    check_stack(t, "llm.layers", 2)
    for i in range(2):
        check_output_projection(t, f"llm.layers.{i}.attn", language.layers[i].self_attn.o_proj)
        k = t[f"llm.layers.{i}.attn.k"]   # 4 query heads over 2 key/value heads: each shared by two
        torch.testing.assert_close(k[0], k[1], atol=0, rtol=0)
        assert not torch.equal(k[0], k[2])
    [z] = t["encoder.layers.0.attn.z"]
    [out] = t["encoder.layers.0.attn.out"]
    assert z.shape[:2] == (4, out.shape[0])
    check_output_projection(t, "encoder.layers.0.attn", qwen2.model.model.audio_tower.layers[0].self_attn.out_proj)
