# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Architecture: what is inside Qwen-Audio
#
# Qwen-Audio is a Whisper-large-v2 audio encoder glued onto the Qwen-7B language model:
#
# **audio** → log-mel (80 × 3000) → **conv stem** (two 1-D convolutions, the second with stride 2)
# → **32 transformer blocks** → **average pool** (2×) → `ln_post` → **projector** (1280 → 4096) →
# learned bos/eos around it → **spliced** into the prompt's embeddings between `<audio>` and `</audio>`
# → **Qwen-7B** (32 blocks) → logits over 155,947 ids.
#
# This notebook needs no weights:
#
# 1. the published configuration: shapes at every stage and parameter counts per part, computed from
#    `config.json` alone (the modules are built on PyTorch's `meta` device, which allocates nothing);
# 2. the token budget: how many prompt positions a clip costs;
# 3. a forward pass through a tiny model with random weights in the official checkpoint layout,
#    written to a temporary folder and loaded like a real checkpoint, showing each stage's tensor;
# 4. the real thing for the encoder's ancestor: Whisper base (packaged weights) transcribing a clip.

# %%
# %matplotlib inline
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F

import workbench as wb
from workbench.models.qwen_audio.config import parameter_counts
from workbench.models.qwen_audio.official_layout import (
    REAL_CONFIG,
    official_config,
    official_part,
    official_shapes,
    write_random_checkpoint,
)
from workbench.models.whisper import STANDARD_PREFIX

wb.figures.use_style()
pd.set_option("display.max_colwidth", None)

# %% [markdown]
# ## 1 · The published configuration
# `REAL_CONFIG` is the `config.json` of the published checkpoint (the keys of the official file; the
# sizes of Qwen-Audio). The LLM part is Qwen-7B; the `"audio"` block is Whisper-large-v2's encoder
# plus the projection to the LLM's width.

# %%
audio_cfg = REAL_CONFIG["audio"]
pd.DataFrame([
    {"part": "audio encoder", "width": audio_cfg["n_state"], "layers": audio_cfg["n_layer"],
     "heads": audio_cfg["n_head"], "head dim": audio_cfg["n_state"] // audio_cfg["n_head"],
     "MLP": 4 * audio_cfg["n_state"], "positions": audio_cfg["n_ctx"]},
    {"part": "LLM (Qwen-7B)", "width": REAL_CONFIG["hidden_size"], "layers": REAL_CONFIG["num_hidden_layers"],
     "heads": REAL_CONFIG["num_attention_heads"], "head dim": REAL_CONFIG["kv_channels"],
     "MLP": REAL_CONFIG["intermediate_size"] // 2, "positions": REAL_CONFIG["seq_length"]},
]).set_index("part")

# %% [markdown]
# The LLM's MLP is 11,008 wide although `intermediate_size` says 22,016: the official code halves it
# (two branches, `w1` and `w2`, of 11,008 each, multiplied after a SiLU). Exactness up to 2,048
# positions: beyond `seq_length` the official model switches on dynamic-NTK rotary scaling.
#
# **Shapes at each stage** for one 30 s clip in a prompt of L positions:

# %%
state, out_dim, vocab = audio_cfg["n_state"], audio_cfg["output_dim"], REAL_CONFIG["vocab_size"]
n_frames, n_tokens = wb.audio.encoder_frames(30 * wb.audio.SAMPLE_RATE), wb.audio.audio_tokens(30 * wb.audio.SAMPLE_RATE)
pd.DataFrame([
    {"stage": "waveform, 16 kHz", "shape": f"({30 * wb.audio.SAMPLE_RATE},)", "step": "10 ms hop"},
    {"stage": "log-mel", "shape": f"({audio_cfg['n_mels']}, {wb.audio.mel_frames(30 * wb.audio.SAMPLE_RATE)})", "step": "10 ms"},
    {"stage": "conv1 (k3) + GELU", "shape": f"({state}, {wb.audio.mel_frames(30 * wb.audio.SAMPLE_RATE)})", "step": "10 ms"},
    {"stage": "conv2 (k3, stride 2) + GELU, + sinusoids", "shape": f"({n_frames}, {state})", "step": "20 ms"},
    {"stage": f"{audio_cfg['n_layer']} pre-LN encoder blocks", "shape": f"({n_frames}, {state})", "step": "20 ms"},
    {"stage": "AvgPool1d(2) → ln_post", "shape": f"({n_tokens}, {state})", "step": "40 ms"},
    {"stage": "proj", "shape": f"({n_tokens}, {out_dim})", "step": "40 ms"},
    {"stage": "+ audio bos / eos", "shape": f"({wb.audio.audio_span_tokens(30 * wb.audio.SAMPLE_RATE)}, {out_dim})",
     "step": "40 ms"},
    {"stage": "spliced into the prompt embeddings", "shape": f"(L, {REAL_CONFIG['hidden_size']})", "step": "token"},
    {"stage": f"{REAL_CONFIG['num_hidden_layers']} Qwen blocks → RMSNorm",
     "shape": f"(L, {REAL_CONFIG['hidden_size']})", "step": "token"},
    {"stage": "lm_head", "shape": f"(L, {vocab})", "step": "token"},
]).set_index("stage")

# %% [markdown]
# **Parameters per part**, from the names and shapes of the official checkpoint (no weights read).
# The positional embedding is a fixed table of sinusoids, saved in the checkpoint but not a parameter.

# %%
tensors = pd.DataFrame([{"name": name, "shape": shape, "numel": int(torch.Size(shape).numel())}
                        for name, shape in official_shapes(REAL_CONFIG).items()])
tensors["part"] = tensors["name"].map(official_part)
parts = tensors.groupby("part", sort=False).agg(tensors=("name", "size"), parameters=("numel", "sum"))
parts["GB in bf16"] = parts["parameters"] * 2 / 1e9
parts["share %"] = 100 * parts["parameters"] / parts["parameters"].sum()
parts.style.format({"parameters": "{:,}", "GB in bf16": "{:.3f}", "share %": "{:.2f}"})

# %% [markdown]
# The same counts from the modules themselves, built on the `meta` device from the config
# (`parameter_counts`): encoder + projector 640,119,808, LLM 7,754,182,656.

# %%
counts = parameter_counts(REAL_CONFIG)
from_names = parts["parameters"].drop("encoder: positions (fixed sinusoids)")
summary = pd.DataFrame({
    "modules on meta": {"encoder + projector": counts["encoder"] + counts["projector"], "LLM": counts["llm"],
                        "total": sum(counts.values())},
    "checkpoint names": {"encoder + projector": int(from_names.filter(regex="^(encoder|projector)").sum()),
                         "LLM": int(from_names.filter(regex="^LLM").sum()), "total": int(from_names.sum())},
})
assert (summary["modules on meta"] == summary["checkpoint names"]).all()
summary.style.format("{:,}")

# %%
fig, ax = plt.subplots(figsize=(9, 3.6))
shown = parts["parameters"].drop("encoder: positions (fixed sinusoids)")[::-1]
ax.barh(shown.index, shown.values, color=["#1f77b4" if p.startswith("LLM") else "#ff7f0e" for p in shown.index])
ax.set_xscale("log")
ax.set_xlabel("parameters (log scale)")
ax.set_title("Qwen-Audio: parameters per part (orange: audio side, blue: LLM)")
for y, value in enumerate(shown.values):
    ax.text(value, y, f" {value:,}", va="center", fontsize=8)
plt.show()

# %% [markdown]
# Most of the audio side is the encoder's 32 blocks; on the LLM side the embedding and `lm_head`
# (155,947 × 4,096 each, untied) are 1.3 B of the 7.75 B.
#
# ## 2 · The token budget
# Each LLM audio token covers 40 ms (10 ms mel hop × 2 for conv2's stride × 2 for the pool), and every
# clip adds a learned bos and eos: a 30 s clip costs 752 positions. Audio is cut at 30 s.

# %%
seconds = [0.5, 1, 2, 5, 10, 15, 20, 25, 30]
pd.DataFrame([{"clip (s)": s, "mel frames (10 ms)": wb.audio.mel_frames(int(s * wb.audio.SAMPLE_RATE)),
               "encoder frames (20 ms)": wb.audio.encoder_frames(int(s * wb.audio.SAMPLE_RATE)),
               "audio tokens (40 ms)": wb.audio.audio_tokens(int(s * wb.audio.SAMPLE_RATE)),
               "prompt positions": wb.audio.audio_span_tokens(int(s * wb.audio.SAMPLE_RATE)),
               "share of 2048 positions %": round(100 * wb.audio.audio_span_tokens(int(s * wb.audio.SAMPLE_RATE)) / 2048, 1)}
              for s in seconds]).set_index("clip (s)")

# %%
grid = torch.arange(0, 30 * wb.audio.SAMPLE_RATE + 1, wb.audio.SAMPLE_RATE // 10).tolist()
positions = [wb.audio.audio_span_tokens(n) for n in grid]
fig, ax = plt.subplots(figsize=(9, 3.2))
ax.plot([n / wb.audio.SAMPLE_RATE for n in grid], positions)
ax.axhline(REAL_CONFIG["seq_length"] / 2, color="0.6", linestyle="--", linewidth=1)
ax.text(0.3, REAL_CONFIG["seq_length"] / 2 + 15, "half of the 2,048 positions the model computes exactly", fontsize=8)
ax.set_xlabel("clip length (s)")
ax.set_ylabel("prompt positions")
ax.set_title(f"one position per {wb.audio.SECONDS_PER_TOKEN * 1000:.0f} ms, plus bos and eos: 752 for 30 s")
plt.show()

# %% [markdown]
# So two 30 s clips (1,504 positions) and a few hundred tokens of text fill the 2,048 positions within
# which the native implementation equals the official one.
#
# ## 3 · A forward pass, stage by stage, on a tiny model
# `write_random_checkpoint` writes a checkpoint in the published layout (official tensor names, fused
# `c_attn`, `config.json` with the `"audio"` block, generation and tokenizer configs) with seeded random
# weights. This one is tiny (widths of 64, two blocks each side) but keeps the real vocabulary. Its
# `qwen.tiktoken` is synthetic: the real file cannot ship here, so the text ids differ from the real
# tokenizer's while every special and tag id is the real one. The weights are random, so the outputs
# are noise: what matters here are the shapes.

# %%
scratch = tempfile.TemporaryDirectory()
tiny_config = official_config(hidden=64, layers=2, heads=4, intermediate=256,
                              audio_state=64, audio_layers=2, audio_heads=4)
checkpoint = write_random_checkpoint(Path(scratch.name) / "qwen-audio-tiny", tiny_config)
print(sorted(p.name for p in checkpoint.iterdir()))
model = wb.load(checkpoint)
model

# %% [markdown]
# The demo clip with the official LibriSpeech prompt; the `<audio>…</audio>` reference becomes
# `<audio>`, one `[[[AUDIO:modality]]]` placeholder per audio token plus two for bos/eos, `</audio>`.

# %%
clip = wb.demo.demo_clip("speech_en")
inputs = model.inputs(wb.preset("librispeech"), audio=wb.demo.demo_path("speech_en"))
span = inputs.audios[0]
tokens = model.tokenizer.convert_ids_to_tokens(inputs.input_ids[0])
print(f"“{clip.text}”: {span.n_samples} samples = {span.n_samples / wb.audio.SAMPLE_RATE:.2f} s")
print(f"{inputs.length} prompt positions; the audio occupies {span.start}…{span.stop - 1} ({span.n_positions})")
print("".join(tokens[:3]), "…", "".join(tokens[span.stop - 2:]))

# %%
wb.figures.plot_mel(span.mel[:, :wb.audio.mel_frames(span.n_samples)], n_samples=span.n_samples,
                    title="log-mel of the clip's own frames")

# %% [markdown]
# Now the encoder by hand, module by module, and the same through the model's own `encode_audio`:

# %%
encoder = model.encoder
frames = wb.audio.encoder_frames(span.n_samples)
with torch.no_grad():
    mel = span.mel[None, :, :2 * frames]                         # trimmed to 2·T mel frames
    after_conv1 = F.gelu(encoder.conv1(mel))
    after_conv2 = F.gelu(encoder.conv2(after_conv1)).transpose(1, 2)
    hidden = after_conv2 + encoder.positional_embedding[:frames]
    for block in encoder.blocks:
        hidden, _ = block(hidden, None, False)
    pooled = encoder.avg_pooler(hidden.transpose(1, 2)).transpose(1, 2)
    projected = encoder.proj(encoder.ln_post(pooled))
    audio_embeds = model.encode_audio(inputs).embeds[0]         # [bos, tokens…, eos]
    spliced = model.embed(inputs, [audio_embeds])
    output = model.forward(inputs)

print("by hand == encode_audio (tokens between bos and eos):",
      torch.allclose(projected[0], audio_embeds[1:-1], atol=1e-6))
print("spliced positions hold the audio:", torch.equal(spliced[span.start:span.stop], audio_embeds))
pd.DataFrame([
    {"stage": "log-mel (padded 30 s window)", "shape": tuple(span.mel.shape)},
    {"stage": "log-mel, trimmed to 2·T", "shape": tuple(mel.shape[1:])},
    {"stage": "conv1 + GELU", "shape": tuple(after_conv1.shape[1:])},
    {"stage": "conv2 (stride 2) + GELU → encoder frames", "shape": tuple(after_conv2.shape[1:])},
    {"stage": f"{len(encoder.blocks)} encoder blocks", "shape": tuple(hidden.shape[1:])},
    {"stage": "AvgPool1d(2) → audio tokens", "shape": tuple(pooled.shape[1:])},
    {"stage": "ln_post → proj", "shape": tuple(projected.shape[1:])},
    {"stage": "+ bos / eos", "shape": tuple(audio_embeds.shape)},
    {"stage": "prompt embeddings with the audio spliced in", "shape": tuple(spliced.shape)},
    {"stage": "LLM → logits", "shape": tuple(output.logits.shape[1:])},
]).set_index("stage")

# %% [markdown]
# The spliced sequence: text embeddings around, the projected audio in the middle. (Random weights, so
# only the layout is meaningful: the audio rows come from the encoder, all others from `wte`.)

# %%
fig, ax = plt.subplots(figsize=(9, 3))
limit = float(spliced.abs().max())
ax.imshow(spliced.T.numpy(), aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
for edge in (span.start - 0.5, span.stop - 0.5):
    ax.axvline(edge, color="black", linewidth=1)
ax.set_xlabel("prompt position")
ax.set_ylabel("embedding dim")
ax.set_title(f"input embeddings: audio at positions {span.start}…{span.stop - 1}, tags after it")
plt.show()

# %%
scratch.cleanup()

# %% [markdown]
# ## 4 · The encoder's ancestor, with real weights: Whisper
# Qwen-Audio's encoder was initialised from Whisper-large-v2 and reads the same 80-bin log-mel. Whisper
# base (74 M parameters) ships as package data (no model hub); greedy decoding of the standard
# English transcription prefix:

# %%
whisper = wb.load("whisper-base")
print(whisper)
transcript = whisper.generate(STANDARD_PREFIX, wb.demo.demo_path("speech_en"), max_new_tokens=40)
pd.DataFrame([{"prefix": STANDARD_PREFIX, "transcript": transcript.text.strip(), "reference": clip.text}])

# %% [markdown]
# Whisper keeps the audio in its encoder and reaches it through cross-attention; Qwen-Audio instead
# puts 40 ms audio tokens into the LLM's own sequence. Next: notebooks that trace what the LLM does
# with those positions.
