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
# # 02 · What does the model look at, and when does it decide?
#
# `wb.trace(model, prompt, audio, capture=[…])` runs the model once and returns a `Trace`: every input
# position labelled (audio token *k* with its 40 ms in seconds, tag with its slot, text, chat markers),
# the logits, and the tensors asked for by stable dotted names such as `llm.layers.3.attn.pattern`.
# Attention switches to eager math only for the layers being captured; the rest keeps the fast path.
#
# 1. **Whisper base** (real weights) on a real sentence: the encoder's self-attention, where each output
#    word attends in time (cross-attention, with Whisper's alignment heads), the attention mass per
#    layer, and the logit lens: at which layer the next word wins.
# 2. **Qwen-Audio** in the official layout (tiny, random weights): the same questions for a model that
#    puts 40 ms audio tokens into the LLM's own sequence; narrow captures and the size bound; the
#    widgets for JupyterLab.

# %%
# %matplotlib inline
import tempfile
import warnings
from pathlib import Path

import pandas as pd
import torch

import workbench as wb
from workbench.models.qwen_audio.official_layout import official_config, write_random_checkpoint
from workbench.models.whisper import STANDARD_PREFIX

wb.figures.use_style()
pd.set_option("display.max_colwidth", 80)
# The random Qwen-Audio below writes arbitrary tokens; some have no glyph in the bundled font.
warnings.filterwarnings("ignore", message="Glyph .* missing from font")

# %% [markdown]
# ## 1 · Whisper base on a real sentence
# The demo clip is one English sentence (espeak-ng). One call generates the transcript greedily and
# traces prompt + output in a single forward pass, keeping the cross-attention and decoder
# self-attention of every layer and the self-attention of the last encoder layer, in float16.

# %%
whisper = wb.load("whisper-base")
clip = wb.demo.demo_clip("speech_en")
t = wb.trace(whisper, STANDARD_PREFIX, clip.path, generate=40, dtype=torch.float16,
             capture=["decoder.layers.*.cross_attn.pattern", "decoder.layers.*.self_attn.pattern",
                      "encoder.layers.5.attn.pattern"])
print(f"reference:  {clip.text}\ntranscript: {t.generation.text.strip()}")
t

# %% [markdown]
# Every position of the decoder's sequence, labelled: the prompt's tags with their slot, then the output.
# (Whisper's audio is no position of this sequence: the decoder reaches it through cross-attention.)

# %%
t.positions[["position", "token", "kind", "group", "part", "tag_kind", "slot"]]

# %% [markdown]
# What the model hears: the log-mel of the clip (10 ms frames), with the 40 ms grid on top.

# %%
span = t.inputs.audios[0]
wb.figures.plot_mel(span.mel[:, :wb.audio.mel_frames(span.n_samples)], n_samples=span.n_samples, title=f"log-mel · “{clip.text}”")

# %% [markdown]
# **The encoder.** Self-attention of the last encoder block over the clip's own frames (20 ms each),
# averaged over its 8 heads. (Whisper's encoder always runs the 30 s window; the figure keeps the clip.)

# %%
wb.figures.plot_encoder_attention(t, 5)

# %% [markdown]
# **Where each output word attends in time.** Whisper's generation config names the cross-attention
# heads that align text with audio; averaged, they move through the clip word by word. Each row is
# scaled to its maximum.

# %%
print("alignment heads (layer, head):", t.alignment_heads)
wb.figures.plot_attention_over_time(t, "output", heads="alignment")

# %% [markdown]
# Averaged over every head of every layer instead, the same map is much more diffuse: the alignment
# is carried by a few heads.

# %%
wb.figures.plot_attention_over_time(t, "output")

# %% [markdown]
# One word, as a strip under the mel on the same time axis:

# %%
fox = int(t.positions.index[t.positions["token"] == " fox"][0])
wb.figures.plot_audio_attention(t, fox, heads="alignment")

# %% [markdown]
# **Attention mass per layer.** The share of the decoder's self-attention on the prompt's tags and on
# the text written so far (for Whisper the audio share is zero by construction: the audio is in the
# cross-attention).

# %%
wb.figures.plot_attention_mass(t, "output")

# %% [markdown]
# **When does it decide?** The logit lens reads the residual stream after each decoder layer through
# the final layer norm and the unembedding. At the position that predicts “ fox” (the one after
# “ brown”), the word ranks in the thousands through layer 4 and wins only in the last layer; the
# first row (“embed”) just reads back the input token. “ box” (a rhyme) is followed for contrast.

# %%
lens = wb.logit_lens(whisper, STANDARD_PREFIX, clip.path, position=fox - 1, generate=40, targets=[" fox", " box"])
lens.to_pandas()

# %%
lens.plot()

# %% [markdown]
# ## 2 · Qwen-Audio: audio tokens inside the LLM's sequence
# A tiny checkpoint in the published layout with seeded random weights (as in notebook 01; synthetic
# text ids, real tag ids). Its patterns are noise; what this part shows is the machinery that reads them:
# the same calls work on the real checkpoint.

# %%
scratch = tempfile.TemporaryDirectory()
config = official_config(hidden=64, layers=4, heads=4, intermediate=256, audio_state=64, audio_layers=2,
                         audio_heads=4)
model = wb.load(write_random_checkpoint(Path(scratch.name) / "qwen-audio-tiny", config))
print(len(model.adapter.points), "capture points, e.g.", list(model.adapter.points)[:4])
q = wb.trace(model, wb.preset("librispeech"), clip.path, generate=8,
             capture=["llm.layers.*.attn.pattern", "encoder.blocks.*.attn.pattern"])
q

# %% [markdown]
# The prompt's positions: `<audio>` carries the learned audio bos vector, then one position per 40 ms
# audio token (with its time), `</audio>` the eos vector, then the six tags with their slots, then the output.

# %%
table = q.positions[["position", "label", "kind", "group", "part", "audio_token", "start_s", "end_s",
                     "tag_kind", "slot"]]
pd.concat([table.head(4), table[table["part"] == "prompt"].tail(7), table[table["part"] == "output"].head(3)])

# %%
wb.figures.plot_encoder_attention(q, 1)

# %% [markdown]
# The output tokens' attention over the audio tokens (LLM self-attention, all layers and heads): as a
# strip under the mel, and as a token × time map.

# %%
wb.figures.plot_audio_attention(q, "output")

# %%
wb.figures.plot_attention_over_time(q, "output")

# %% [markdown]
# Attention mass per layer of the output tokens: audio (including bos/eos), tags, text.

# %%
wb.figures.plot_attention_mass(q, "output")

# %% [markdown]
# The logit lens at the last prompt tag, following the model's own prediction and the tag `<|en|>`:

# %%
wb.logit_lens(model, wb.preset("librispeech"), clip.path, targets=["<|en|>"]).to_pandas()

# %% [markdown]
# **Narrow captures.** Only text queries × audio keys, two heads, float16:

# %%
narrow = wb.trace(model, wb.preset("librispeech"), clip.path, generate=8, capture="llm.layers.*.attn.pattern",
                  rows="output", cols="audio", heads=[0, 2], dtype=torch.float16)
print({name: (tuple(x.shape), x.dtype) for name, x in narrow.activations.items()})

# %% [markdown]
# A request that would not fit fails before anything runs, with its size and how to narrow it:

# %%
try:
    wb.trace(model, wb.preset("librispeech"), clip.path, capture="llm.layers.*.attn.pattern", max_bytes=2**20)
except wb.errors.TraceTooLargeError as error:
    print(f"{type(error).__name__}: {error}")

# %% [markdown]
# ## 3 · Widgets (interactive in JupyterLab)
# A layer/head browser over a trace, and a tag editor: one dropdown per tag slot; every change re-runs
# the model and redraws the output tokens' attention over the audio.

# %%
wb.widgets.AttentionBrowser(q)

# %%
wb.widgets.TagEditor(model, clip.path, max_new_tokens=8)

# %% [markdown]
# Same calls on the real checkpoint: `wb.load("/path/to/Qwen-Audio")`, then `wb.trace(…)` with
# `capture=…, layers=…, heads=…, rows=…, cols=…` narrowed to fit in memory.
