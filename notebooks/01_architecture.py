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
# Qwen-Audio is a Whisper-large-v2 audio encoder glued onto the Qwen-7B language model. **You will
# learn** the numbers a lecture on it needs (the table in section 0), the shape of the tensor at every
# stage, where the 8.4 B parameters are, what a clip costs in prompt positions, and how to run the
# encoder by hand, module by module, on a trained model.
#
# **Numbers** come from the published configuration (`REAL_CONFIG`, the published `config.json`; no
# weights are read). **Everything computed** (section 3) runs on `MODEL`, by default the embedded nano
# Qwen-Audio: the same classes and layout, trained in miniature (notebook 04), so its tensors are real
# activations, only smaller. Section 4 runs Whisper base, the encoder's ancestor, with real weights.
#
# **Runs** in about 30 s of CPU time (measured: 31 s on the shared 2-core machine). Set
# `WORKBENCH_MODEL=/models/Qwen-Audio WORKBENCH_DEVICE=cuda WORKBENCH_DTYPE=bfloat16` to compute section 3 on the published model.

# %%
# %matplotlib inline
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import Audio, display

import workbench as wb
from workbench.evaluation.replicas import synthetic_item
from workbench.figures.style import save_notebook_figure
from workbench.models.qwen_audio.config import parameter_counts
from workbench.models.qwen_audio.official_layout import REAL_CONFIG, official_part, official_shapes
from workbench.models.whisper import STANDARD_PREFIX

wb.figures.use_style()
pd.set_option("display.max_colwidth", None)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model

# %% [markdown]
# ## 0 · The picture and the numbers
#
# ```
#  waveform 16 kHz, ≤ 30 s (480,000 samples; longer audio is cut)
#      │  STFT, hop 160 = 10 ms · 80 mel bins
#      ▼
#  log-mel (80 × 3000)                                   100 frames/s (10 ms)
#      │  conv1 k3 + GELU · conv2 k3 stride 2 + GELU · + sinusoid positions
#      ▼
#  32 Whisper blocks, width 1280, 20 heads               50 frames/s (20 ms)
#      │  AvgPool1d(2) · ln_post · proj 1280 → 4096
#      ▼
#  [bos] audio tokens … [eos]  (learned bos/eos)         25 tokens/s (40 ms)
#      │  overwrite the positions <audio> … </audio> of the prompt's embeddings
#      ▼
#  <audio> ▒▒▒▒▒▒▒▒▒▒ </audio> <|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>
#      │  Qwen-7B: 32 blocks, width 4096, 32 heads, RMSNorm, rotary positions
#      ▼
#  logits over 155,947 ids → the answer, token by token, until <|endoftext|>
# ```
#
# The lecturer's table, every value read off the published config or computed from it:

# %%
audio_cfg = REAL_CONFIG["audio"]
thirty_s = 30 * wb.audio.SAMPLE_RATE
counts = parameter_counts(REAL_CONFIG)
pd.DataFrame([
    ("sample rate", "16 kHz mono; cut at 30 s", f"{thirty_s:,} samples"),
    ("log-mel", f"{audio_cfg['n_mels']} bins, hop 160 = 10 ms (100 Hz)", f"{wb.audio.mel_frames(thirty_s):,} frames / 30 s"),
    ("encoder frames", "conv2 stride 2 → 20 ms (50 Hz)", f"{wb.audio.encoder_frames(thirty_s):,} / 30 s"),
    ("audio tokens", f"AvgPool1d(2) → {wb.audio.SECONDS_PER_TOKEN * 1000:.0f} ms "
                     f"({1 / wb.audio.SECONDS_PER_TOKEN:.0f} Hz)", f"{wb.audio.audio_tokens(thirty_s)} / 30 s"),
    ("audio positions", "tokens + learned bos and eos", f"{wb.audio.audio_span_tokens(thirty_s)} / 30 s"),
    ("encoder", f"{audio_cfg['n_layer']} layers × {audio_cfg['n_state']}, {audio_cfg['n_head']} heads × "
                f"{audio_cfg['n_state'] // audio_cfg['n_head']}, MLP {4 * audio_cfg['n_state']}",
     f"{counts['encoder'] + counts['projector']:,} parameters with proj"),
    ("projection", f"Linear {audio_cfg['n_state']} → {audio_cfg['output_dim']}", f"{counts['projector']:,} parameters"),
    ("LLM (Qwen-7B)", f"{REAL_CONFIG['num_hidden_layers']} layers × {REAL_CONFIG['hidden_size']}, "
                      f"{REAL_CONFIG['num_attention_heads']} heads × {REAL_CONFIG['kv_channels']}, "
                      f"MLP {REAL_CONFIG['intermediate_size'] // 2:,} a branch", f"{counts['llm']:,} parameters"),
    ("vocabulary", "151,643 BPE ranks + 3,522 special tokens (tags)", f"{REAL_CONFIG['vocab_size']:,} logits"),
    ("exact context", "seq_length; dynamic NTK / logn beyond it", f"{REAL_CONFIG['seq_length']:,} positions"),
    ("total", "≈ 8.39 B parameters", f"{2 * sum(counts.values()) / 1e9:.1f} GB in bf16"),
], columns=["what", "value", "count"]).set_index("what")

# %% [markdown]
# ## 1 · The published configuration
# `REAL_CONFIG` is the `config.json` of the published checkpoint (the keys of the official file; the
# sizes of Qwen-Audio). The LLM part is Qwen-7B; the `"audio"` block is Whisper-large-v2's encoder
# plus the projection to the LLM's width.

# %%
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
ax.set_xlim(right=shown.max() * 30)   # room for the largest part's label
save_notebook_figure(fig, "parameters_per_part")
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
limit = REAL_CONFIG["seq_length"]
fig, ax = plt.subplots(figsize=(9, 3.4))
ax.plot([n / wb.audio.SAMPLE_RATE for n in grid], positions, label="one clip")
ax.plot([n / wb.audio.SAMPLE_RATE for n in grid], [2 * p for p in positions], linestyle=":", label="two clips")
ax.axhline(limit, color="firebrick", linewidth=1.2)
ax.text(0.3, limit - 120, f"{limit:,} positions: the exact context (dynamic NTK beyond)", color="firebrick",
        fontsize=8)
ax.set(xlim=(0, 30), ylim=(0, limit * 1.08), xlabel="clip length (s)", ylabel="prompt positions")
ax.legend(loc="center right", frameon=False)
ax.set_title(f"one position per {wb.audio.SECONDS_PER_TOKEN * 1000:.0f} ms, plus bos and eos: 752 for 30 s")
save_notebook_figure(fig, "audio_positions_vs_clip_length")
plt.show()

# %% [markdown]
# So two 30 s clips (1,504 positions) and a few hundred tokens of text fill the 2,048 positions within
# which the native implementation equals the official one.

# %% [markdown]
# ## 3 · A forward pass, stage by stage, on a trained model
# `MODEL` (nano by default: encoder width 384 with 2 blocks, LLM width 192 with 4 blocks, a small BPE
# of its own; every tag id is read off its tokenizer). The clip is an English sentence from nano's
# held-out test split (`synthetic_item`): nano knows only its synthetic grammar (notebook 04), so a
# clip from that world is one it can transcribe. Its log-mel looks like the demo sentence's in
# notebook 00 (section 1); we do not draw it again. The `<audio>…</audio>` reference becomes `<audio>`,
# one `[[[AUDIO:modality]]]` placeholder per audio token plus two for bos/eos, `</audio>`.

# %%
model = wb.load(MODEL, device=DEVICE, dtype=DTYPE)
print(model.describe())
item = next(it for it in (synthetic_item("asr", i) for i in range(40)) if it.fields["language"] == "en")
inputs = model.inputs(wb.TagPrompt.parse(item.prompt), audio=item.audios[0])
span = inputs.audios[0]
tokens = model.tokenizer.convert_ids_to_tokens(inputs.input_ids[0])
display(Audio(item.audios[0], rate=wb.audio.SAMPLE_RATE))
print(f"“{item.reference}”: {span.n_samples} samples = {span.n_samples / wb.audio.SAMPLE_RATE:.2f} s")
print(f"{inputs.length} prompt positions; the audio occupies {span.start}…{span.stop - 1} ({span.n_positions})")
print("output:", repr(model.generate(wb.TagPrompt.parse(item.prompt), item.audios[0], max_new_tokens=24).text))

# %% [markdown]
# Now the encoder by hand, module by module, and the same through the model's own `encode_audio`:

# %%
encoder = model.encoder
frames = wb.audio.encoder_frames(span.n_samples)
weight = encoder.conv1.weight
with torch.no_grad():
    mel = span.mel[None, :, :2 * frames].to(device=weight.device, dtype=weight.dtype)   # trimmed to 2·T frames
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

tolerance = 1e-5 if weight.dtype == torch.float32 else 2e-2
print("by hand == encode_audio (tokens between bos and eos):",
      torch.allclose(projected[0], audio_embeds[1:-1], atol=tolerance))
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
# The spliced sequence the LLM reads: the projected audio in the middle (one column per 40 ms), text
# embeddings around it (orange: `<audio>` and `</audio>`, which carry the learned bos/eos, and the tags).
# The six tags are the last six columns of the whole sequence, so the right-hand panels zoom onto
# `</audio>` and the tags, with their names. The per-position norm underneath (log scale) shows why each
# panel needs its own colour scale: nano's projected audio tokens are about 50 times larger than its
# tag embeddings, so on one shared scale the tags would be white. Each scale is clipped at the 99th
# percentile of |value| so that a few large dimensions do not wash out the rest.

# %%
values = spliced.float().T.cpu().numpy()
n_positions = values.shape[1]
first = span.stop - 1          # `</audio>`, then the tags
fig, axes = plt.subplots(2, 2, figsize=(11, 4.8), sharex="col", height_ratios=(3, 1), width_ratios=(3, 1.3))
for column, (lo, hi) in enumerate([(0, n_positions), (first, n_positions)]):
    vmax = float(np.percentile(np.abs(values[:, lo:hi]), 99))   # each panel its own scale: see the norms
    image = axes[0, column].imshow(values[:, lo:hi], aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                                   interpolation="nearest", extent=(lo - 0.5, hi - 0.5, values.shape[0] - 0.5, -0.5))
    fig.colorbar(image, ax=axes[0, column], pad=0.01, label="value")
    axes[1, column].bar(range(lo, hi), np.linalg.norm(values[:, lo:hi], axis=0), width=1.0,
                        color=["#1f77b4" if span.start < p < span.stop - 1 else "#ff7f0e" for p in range(lo, hi)])
    axes[1, column].set(yscale="log" if column == 0 else "linear", xlabel="prompt position")
axes[0, 0].axvspan(span.stop - 0.5, n_positions - 0.5, fill=False, edgecolor="#ff7f0e", linewidth=2)
for edge in (span.start - 0.5, span.stop - 0.5):
    axes[0, 0].axvline(edge, color="black", linewidth=1)
axes[0, 0].set(ylabel="embedding dim", title=f"audio at {span.start}…{span.stop - 1} (between the lines), tags boxed")
axes[1, 0].set_ylabel("‖embedding‖ (log)")
axes[1, 1].set_xticks(range(first, n_positions), tokens[first:], rotation=60, ha="right", fontsize=7)
axes[0, 1].set_title("zoom: </audio> and the tags (own scale)")
save_notebook_figure(fig, "spliced_input_embeddings")
plt.show()

# %% [markdown]
# ## 4 · The encoder's ancestor, with real weights: Whisper
# Qwen-Audio's encoder was initialised from Whisper-large-v2 and reads the same 80-bin log-mel. Whisper
# base (74 M parameters) ships as package data (no model hub); greedy decoding of the standard
# English transcription prefix:

# %%
whisper = wb.load("whisper-base")
print(whisper)
clip = wb.demo.demo_clip("speech_en")
display(Audio(str(clip.path)))
transcript = whisper.generate(STANDARD_PREFIX, clip.path, max_new_tokens=40)
pd.DataFrame([{"prefix": STANDARD_PREFIX, "transcript": transcript.text.strip(), "reference": clip.text}])

# %% [markdown]
# Whisper keeps the audio in its encoder and reaches it through cross-attention; Qwen-Audio instead
# puts 40 ms audio tokens into the LLM's own sequence.
#
# ## 5 · Exercises
# **1.** Capturing every LLM self-attention pattern of the published model costs 32 layers × 32 heads
# × L² values. How many GB is that in float32 for one 30 s clip behind the six ASR tags (L = 752 audio
# positions + 6 tags), and how many for nano's 4 layers × 6 heads?

# %%
# Solution
length = wb.audio.audio_span_tokens(30 * wb.audio.SAMPLE_RATE) + 6
real_gb = REAL_CONFIG["num_hidden_layers"] * REAL_CONFIG["num_attention_heads"] * length**2 * 4 / 1e9
nano_cfg = wb.load("nano").config.official
nano_gb = nano_cfg["num_hidden_layers"] * nano_cfg["num_attention_heads"] * length**2 * 4 / 1e9
print(f"L = {length}: published {real_gb:.2f} GB, nano {nano_gb:.3f} GB")
assert length == 758 and abs(real_gb - 2.354) < 0.01

# %% [markdown]
# **2.** Check the token formula on the clip of section 3: its number of audio tokens must be
# `audio_tokens(samples)`, and its audio span two more.

# %%
# Solution
assert span.n_positions == wb.audio.audio_span_tokens(span.n_samples) == wb.audio.audio_tokens(span.n_samples) + 2
assert projected.shape[1] == wb.audio.audio_tokens(span.n_samples)
print(f"{span.n_samples / wb.audio.SAMPLE_RATE:.2f} s → {projected.shape[1]} tokens + bos + eos")

# %% [markdown]
# Next: 02 traces what the model attends to in those positions.
