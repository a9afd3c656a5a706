"""A memory plan per analysis verb: bytes as a function of the sequence length, read off the config.

    memory_plan(REAL_CONFIG, seq_len=800, audio_seconds=30)   # Qwen-Audio 7B, a 30 s clip + tags
    memory_plan(model, seq_len=inputs.length, audio_seconds=len(audio) / 16000)

One row per thing a verb holds, with its shape, its bytes, where it lives and what to do when it is too
big. The sizes follow the code, not a rule of thumb:
- `trace` keeps every captured tensor on the CPU in the model's dtype (or `dtype=`): an LLM pattern is
  (heads, L, L) per layer, a residual (L, d), an encoder pattern (heads, T, T) per clip and block over
  its T encoder frames (20 ms each); logits="all" keeps (L, vocab) float32. While a pattern is captured
  its layer's scores and probabilities exist in float32 on the device (`trace.check_size`);
- `patch_sweep` records the source prompt's residual (what="resid") or head inputs (what="head") at every
  swept layer, (L, d) each, on the device, then runs the target once per layer × column;
- `knockout_sweep` holds nothing across runs: one forward per layer × head (1,024 at 7B);
- `ablate` / `attribute_tags` keep the shared audio prefix's keys and values and run `batch_size` rows
  packed after it (`analysis.scoring`), with logits for the packed positions;
- `attribute_audio` with integrated gradients backpropagates through the LLM: the activations kept for
  the backward pass are an estimate (`exact` False), per layer and row;
- `align` captures every LLM pattern restricted to text rows × audio columns;
- generation keeps a KV cache of (layers, 2, kv_heads, L, head_dim).

Rows marked `exact` are computed as the code allocates them (tests/test_memory.py checks them against
the tensors a trace, a KV cache and the weights actually hold on the tiny fixture). Nothing streams to
disk on its own: a capture too big for RAM is taken layer by layer (`layers=[i]`) and saved as it comes.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch

from workbench.audio import SAMPLE_RATE, audio_span_tokens, encoder_frames
from workbench.models.qwen_audio.config import QwenAudioConfig, build_network

__all__ = ["memory_plan", "parameter_count"]

GIB = 2 ** 30
COLUMNS = ["verb", "item", "shape", "count", "bytes", "GiB", "where", "exact", "advice"]


def _config(source: Any) -> tuple[QwenAudioConfig, torch.dtype | None]:
    """A QwenAudioConfig (and the model's dtype) from a model, a QwenAudioConfig or a config.json dict."""
    if isinstance(source, QwenAudioConfig):
        return source, None
    if isinstance(source, dict):
        return QwenAudioConfig.from_official(source), None
    config = getattr(source, "config", None)
    if isinstance(config, QwenAudioConfig):
        return config, source.dtype
    raise TypeError(f"memory_plan takes a Qwen-Audio model, its QwenAudioConfig or its config.json dict, not "
                    f"{type(source).__name__}")


def parameter_count(config: QwenAudioConfig) -> dict[str, int]:
    """Parameters (and buffers) of the encoder and the LLM, counted on the meta device: the network as
    `load_qwen_audio` builds it, with no memory allocated."""
    with torch.device("meta"):
        network = build_network(config, "sdpa")
    return {name: sum(t.numel() for t in (*part.parameters(), *part.buffers()) if t.is_floating_point())
            for name, part in network.items()}


def memory_plan(source: Any, seq_len: int, audio_seconds: float = 30.0, *, dtype: torch.dtype | None = None,
                n_audio: int = 1, text_rows: int = 32, batch_size: int = 16, row_len: int = 48) -> pd.DataFrame:
    """Bytes per verb for a prompt of `seq_len` positions holding `n_audio` clips of `audio_seconds`.

    source: a Qwen-Audio model, its `QwenAudioConfig`, or a config.json dict (e.g. `REAL_CONFIG`).
    dtype: the model's dtype (default: the model's, else bfloat16, as on a GPU).
    text_rows: output tokens `align` attributes to the audio. batch_size, row_len: rows packed per LLM
    call by `ablate` / `attribute_tags` and their length (variant tags + target tokens).
    """
    config, model_dtype = _config(source)
    dtype = dtype or model_dtype or torch.bfloat16
    for name, value in (("seq_len", seq_len), ("n_audio", n_audio), ("text_rows", text_rows),
                        ("batch_size", batch_size), ("row_len", row_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: give a positive int")
    n_samples = round(audio_seconds * SAMPLE_RATE)
    if not 0 < n_samples <= 30 * SAMPLE_RATE:
        raise ValueError(f"audio_seconds={audio_seconds!r}: give the length of one clip, up to 30 s (the window)")
    audio = audio_span_tokens(n_samples)
    if seq_len < n_audio * audio:
        raise ValueError(f"seq_len={seq_len} is shorter than the audio alone ({n_audio} × {audio} positions for "
                         f"{audio_seconds} s): give the prompt's whole length")
    item = torch.finfo(dtype).bits // 8
    llm, enc = config.llm, config.encoder
    layers, d, heads, vocab = llm.num_hidden_layers, llm.hidden_size, llm.num_attention_heads, llm.vocab_size
    kv_heads, head_dim = llm.num_key_value_heads, d // heads
    blocks, width, enc_heads, frames = enc.n_layer, enc.n_state, enc.n_head, encoder_frames(n_samples)
    L = seq_len
    rows: list[dict] = []

    def row(verb: str, what: str, shape: tuple[int, ...], count: int, size: int, where: str, exact: bool = True,
            advice: str = "") -> None:
        total = math.prod(shape) * count * size
        rows.append({"verb": verb, "item": what, "shape": "×".join(map(str, shape)), "count": count, "bytes": total,
                     "GiB": total / GIB, "where": where, "exact": exact, "advice": advice})

    params = parameter_count(config)
    row("load", "weights: encoder", (params["encoder"],), 1, item, "GPU")
    row("load", "weights: LLM", (params["llm"],), 1, item, "GPU")
    row("generate", "KV cache (prompt + new tokens)", (2, kv_heads, L, head_dim), layers, item, "GPU")
    forward = L * (3 * llm.intermediate_size + 4 * d) * item + L * vocab * 4
    rows.append({"verb": "forward", "item": "working set of one pass (MLP + logits float32)", "shape": f"{L}×…",
                 "count": 1, "bytes": forward, "GiB": forward / GIB, "where": "GPU", "exact": False,
                 "advice": "logits_to_keep=1 drops the (L, vocab) logits"})
    pattern_advice = "layers=[…], heads=[…], rows='output', cols='audio', or dtype=torch.float16"
    row("trace", "llm.layers.*.attn.pattern", (heads, L, L), layers, item, "CPU", advice=pattern_advice)
    row("trace", "pattern being computed (scores + probs, float32)", (2, heads, L, L), 1, 4, "GPU",
        advice="one layer at a time; bounded by max_bytes with the rest")
    row("trace", "llm.layers.*.resid_post", (L, d), layers, item, "CPU")
    row("trace", "llm.layers.*.attn.q/k/v/z (each)", (heads, L, head_dim), layers, item, "CPU")
    row("trace", "encoder.blocks.*.attn.pattern", (enc_heads, frames, frames), blocks * n_audio, item, "CPU",
        advice="layers=[…] (encoder blocks), heads=[…]")
    row("trace", "encoder.blocks.*.resid_post", (frames, width), blocks * n_audio, item, "CPU")
    row("trace", "logits='all' (float32)", (L, vocab), 1, 4, "CPU", advice="logits='last'")
    row("patch_sweep", "source activations, what='resid' or 'head' (all layers)", (L, d), layers, item, "GPU",
        advice="layers=[…] records only the swept layers")
    row("patch_sweep", "one patched target run", (L, 3 * llm.intermediate_size + 4 * d), 1, item, "GPU",
        exact=False, advice="runs: layers × groups (resid) or layers × heads (head), one at a time")
    row("knockout_sweep", "one knocked-out run (nothing kept across runs)", (L, 3 * llm.intermediate_size + 4 * d),
        1, item, "GPU", exact=False, advice=f"{layers * heads} runs for the LLM; layers=[…] to sweep fewer")
    prefix = n_audio * audio + 1
    packed = batch_size * row_len
    row("ablate", "shared audio prefix: keys and values", (2, kv_heads, prefix, head_dim), layers, item, "GPU")
    row("ablate", "packed rows: logits (float32)", (packed, vocab), 1, 4, "GPU", advice="batch_size= fewer rows")
    row("ablate", "packed rows: block-causal mask", (packed, prefix + packed), 1, item, "GPU")
    row("attribute_audio", "integrated gradients: activations kept for backward (per step)",
        (L, 6 * d + 3 * llm.intermediate_size), layers, item, "GPU", exact=False,
        advice="internal_batch_size small; method='occlusion' needs no backward")
    row("align", "patterns kept: text rows × audio columns", (heads, text_rows, n_audio * audio), layers, item,
        "CPU", advice="heads=[(layer, head), …] from find_alignment_heads")
    row("align", "pattern being computed (scores + probs, float32)", (2, heads, L + text_rows, L + text_rows), 1, 4,
        "GPU")
    return pd.DataFrame(rows, columns=COLUMNS)
