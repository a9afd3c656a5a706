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

# %%

# %% [markdown]
# # 02 · What does the model look at, and when does it decide?
#
# `wb.trace(model, prompt, audio, capture=[…])` runs the model once and returns a `Trace`: every input
# position labelled (audio token *k* with its 40 ms in seconds, tag with its slot, text, chat markers),
# the logits, and the tensors asked for by stable dotted names such as `llm.layers.3.attn.pattern`.
# Attention switches to eager math only for the layers being captured; the rest keeps the fast path.
#
# **You will learn** to read four kinds of figure and what each can and cannot say: encoder
# self-attention, where each output word attends in time, the attention mass per layer (and why it
# must be compared with the share of positions, and the attention sink), and the logit lens.
#
# 1. **Whisper base** (real weights) on the demo sentence of notebook 00.
# 2. **Qwen-Audio** (`MODEL`, by default the trained nano) on clips from nano's held-out test split,
#    where the 40 ms audio tokens are positions of the LLM's own sequence; the audio-attention
#    measure over several clips with a bootstrap CI; narrow captures; the widgets for JupyterLab.
#
# **Runs** in about 80 s of CPU time (measured: 78 s on the shared 2-core machine).
# `WORKBENCH_MODEL=/models/Qwen-Audio WORKBENCH_DEVICE=cuda WORKBENCH_DTYPE=bfloat16` runs section 2 on the published model.

# %%
# %matplotlib inline
import os

import numpy as np
import pandas as pd
import torch
from IPython.display import Audio, display

import workbench as wb
from workbench.analysis.stats import mean_ci
from workbench.evaluation.replicas import synthetic_item
from workbench.figures.style import save_notebook_figure
from workbench.models.whisper import STANDARD_PREFIX

wb.figures.use_style()
pd.set_option("display.max_colwidth", 80)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model

# %% [markdown]
# ## 1 · Whisper base on a real sentence
# The demo clip is one English sentence (espeak-ng); its waveform and log-mel are in notebook 00,
# section 1, and the mel is the top panel of the strips below. One call generates the transcript
# greedily and traces prompt + output in a single forward pass, keeping the cross-attention and decoder
# self-attention of every layer and the self-attention of the last encoder layer, in float16.

# %%
whisper = wb.load("whisper-base")
clip = wb.demo.demo_clip("speech_en")
display(Audio(str(clip.path)))
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
# **The encoder.** Self-attention of the last encoder block over the clip's own frames (20 ms each),
# averaged over its 8 heads. (Whisper's encoder always runs the 30 s window; the figure keeps the clip.)

# %%
save_notebook_figure(wb.figures.plot_encoder_attention(t, 5), "whisper_encoder_attention_last_layer")

# %% [markdown]
# **Where each output word attends in time.** Whisper's generation config names the cross-attention
# heads that align text with audio; averaged, they move through the clip word by word. Each row is
# scaled to its maximum.

# %%
print("alignment heads (layer, head):", t.alignment_heads)
save_notebook_figure(wb.figures.plot_attention_over_time(t, "output", heads="alignment"),
                     "whisper_words_over_time_alignment_heads")

# %% [markdown]
# Averaged over every head of every layer instead, the same map is much more diffuse: the alignment
# is carried by a few heads.

# %%
save_notebook_figure(wb.figures.plot_attention_over_time(t, "output"), "whisper_words_over_time_all_heads")

# %% [markdown]
# One word, as a strip under the mel on the same time axis:

# %%
fox = int(t.positions.index[t.positions["token"] == " fox"][0])
display(Audio(str(clip.path)))
save_notebook_figure(wb.figures.plot_audio_attention(t, fox, heads="alignment"), "whisper_fox_attention_strip")

# %% [markdown]
# **Attention mass per layer.** The share of the decoder's self-attention on the prompt's tags and on
# the text written so far (for Whisper the audio share is zero by construction: the audio is in the
# cross-attention).
#
# **Caveat: the attention sink.** Softmax attention must put its weight somewhere; heads with nothing to
# read park it on one early position, most often the first (`<|startoftranscript|>`), whose value
# vector is then close to a no-op. So a large "tags" share here does not mean the tags are being read:
# the table under the figure gives the part of each layer's attention that lands on position 0 alone.
# Knockouts and patching (notebook 05) test what a position actually contributes.

# %%
save_notebook_figure(wb.figures.plot_attention_mass(t, "output"), "whisper_attention_mass_per_layer")

# %%
output_rows = t.row_index("output")
mass = t.attention_mass("output").set_index("layer")
mass["on position 0 (sink)"] = [float(t.pattern(layer, "self")[:, output_rows, 0].float().mean())
                                for layer in mass.index]
mass.round(3)

# %% [markdown]
# **When does it decide?** The logit lens reads the residual stream after each decoder layer through
# the final layer norm and the unembedding. At the position that predicts “ fox” (the one after
# “ brown”), the word ranks in the thousands through layer 4 and wins only in the last layer; the
# first row (“embed”) just reads back the input token. “ box” (a rhyme) is followed for contrast.

# %%
lens = wb.logit_lens(whisper, STANDARD_PREFIX, clip.path, position=fox - 1, generate=40, targets=[" fox", " box"])
lens.to_pandas()

# %%
save_notebook_figure(lens.plot(), "whisper_logit_lens_fox")

# %% [markdown]
# ## 2 · Qwen-Audio: audio tokens inside the LLM's sequence
# `MODEL` is the trained nano by default (4 LLM layers × 6 heads, 2 encoder blocks). nano knows only
# its synthetic grammar of about 70 English words (notebook 04), so the clips here come from its
# **held-out test split** (`synthetic_item`: sentences nano never heard in training) and each is run
# under its own ASR prompt. The first English one:

# %%
model = wb.load(MODEL, device=DEVICE, dtype=DTYPE)
items = [it for it in (synthetic_item("asr", i) for i in range(60)) if it.fields["language"] == "en"][:6]
item, prompt = items[0], wb.TagPrompt.parse(items[0].prompt)
print(len(model.adapter.points), "capture points, e.g.", list(model.adapter.points)[:4])
q = wb.trace(model, prompt, item.audios[0], generate=24,
             capture=["llm.layers.*.attn.pattern", "encoder.blocks.*.attn.pattern"])
display(Audio(item.audios[0], rate=wb.audio.SAMPLE_RATE))
print(f"reference: {item.reference}\noutput:    {q.generation.text}")
q

# %% [markdown]
# With nano, compare the two lines above: it writes “cat” where the speaker said “duck” — **a
# recognition error**, on a sentence well inside its grammar. Keep it in mind; the logit lens below
# looks at the moment it happens.
#
# The prompt's positions: `<audio>` carries the learned audio bos vector, then one position per 40 ms
# audio token (with its time), `</audio>` the eos vector, then the six tags with their slots, then the output.

# %%
table = q.positions[["position", "label", "kind", "group", "part", "audio_token", "start_s", "end_s",
                     "tag_kind", "slot"]]
pd.concat([table.head(4), table[table["part"] == "prompt"].tail(7), table[table["part"] == "output"].head(3)])

# %% [markdown]
# nano's encoder is Whisper tiny.en's first two blocks, frozen (notebook 04): the last of them, over
# the clip's 20 ms frames.

# %%
save_notebook_figure(wb.figures.plot_encoder_attention(q, 1), "nano_encoder_attention_block1")

# %% [markdown]
# The output tokens' attention over the audio tokens (LLM self-attention, all layers and heads): as a
# strip under the mel, and as a token × time map (each row scaled to its maximum).

# %%
display(Audio(item.audios[0], rate=wb.audio.SAMPLE_RATE))
save_notebook_figure(wb.figures.plot_audio_attention(q, "output"), "nano_output_attention_strip")

# %%
save_notebook_figure(wb.figures.plot_attention_over_time(q, "output"), "nano_words_over_time")

# %% [markdown]
# **Attention mass per layer** of the output tokens: audio (including bos/eos), tags, text.

# %%
save_notebook_figure(wb.figures.plot_attention_mass(q, "output"), "nano_attention_mass_per_layer")

# %% [markdown]
# **Read it against two baselines.** (1) The audio is most of the positions an output token can see
# (58 audio tokens + bos/eos against six tags and a few words): attention spread *uniformly* over
# the visible positions would already give the audio that share. (2) The audio bos at position 0 is
# where nano parks idle attention (the sink of section 1), and it counts as "audio". So the table
# splits the audio share into bos and the 40 ms tokens proper, and divides the tokens' share by
# their share of the visible positions (**enrichment**: 1 means no preference for the audio at all).

# %%
groups = q.positions["group"].to_numpy()
kinds = q.positions["kind"].to_numpy()
rows = q.rows[q.row_index("output")]
uniform_tokens = float(np.mean([np.mean(kinds[:p + 1] == "audio") for p in rows]))
per_layer = q.attention_mass("output").set_index("layer")[["audio", "tags", "text"]]
per_layer["audio bos (sink)"] = [float(q.pattern(layer, "self")[:, q.row_index("output"), 0].mean())
                                 for layer in per_layer.index]
per_layer["audio tokens"] = [float(q.pattern(layer, "self")[:, q.row_index("output")][:, :, kinds == "audio"]
                                   .sum(-1).mean()) for layer in per_layer.index]
per_layer["uniform share of tokens"] = uniform_tokens
per_layer["enrichment"] = per_layer["audio tokens"] / uniform_tokens
per_layer.round(3)

# %% [markdown]
# **Over several clips.** One clip is an anecdote. The same enrichment on the six held-out English
# clips, per layer, with its mean and a 95 % bootstrap interval (`mean_ci`; six clips give a wide one):

# %%
enrichment = []
for it in items:
    trace_ = wb.trace(model, wb.TagPrompt.parse(it.prompt), it.audios[0], generate=24,
                      capture="llm.layers.*.attn.pattern", rows="output")
    kinds_ = trace_.positions["kind"].to_numpy()
    visible = float(np.mean([np.mean(kinds_[:p + 1] == "audio") for p in trace_.rows]))
    for layer in trace_.layers("self"):
        share = float(trace_.pattern(layer, "self")[:, :, kinds_[trace_.cols] == "audio"].sum(-1).mean())
        enrichment.append({"clip": it.reference, "layer": layer, "enrichment": share / visible,
                           "correct": trace_.generation.text.strip() == it.reference})
enrichment = pd.DataFrame(enrichment)
print(f"{enrichment.drop_duplicates('clip')['correct'].sum()} of {len(items)} clips transcribed exactly")
pd.DataFrame({layer: mean_ci(group["enrichment"]).as_dict() for layer, group in enrichment.groupby("layer")}).T.round(3)

# %% [markdown]
# **The logit lens at the error.** At the position that predicts the first word where the output departs
# from the reference (for nano: the word after the second “the”), the residual stream after each LLM
# layer read through the final norm and `lm_head`: the spoken word against the written one. (Targets
# are the model's own BPE pieces; a word of several pieces is followed by its first piece.)

# %%
written = q.positions[q.positions["part"] == "output"]
said = item.reference.split()
departs = next((k for k, (out, ref) in enumerate(zip(written["token"].str.strip(), said)) if out != ref),
               min(len(said), len(written)) - 1)
targets = list(dict.fromkeys([" " + said[departs], written["token"].iloc[departs]]))
print(f"output word {departs}: wrote {written['token'].iloc[departs]!r}, said {said[departs]!r}")
nano_lens = wb.logit_lens(model, prompt, item.audios[0], position=int(written["position"].iloc[departs]) - 1,
                          generate=24, targets=targets)
nano_lens.to_pandas()

# %%
save_notebook_figure(nano_lens.plot(), "nano_logit_lens_at_first_error")

# %% [markdown]
# **Narrow captures.** Only text queries × audio keys, two heads, float16:

# %%
narrow = wb.trace(model, prompt, item.audios[0], generate=8, capture="llm.layers.*.attn.pattern",
                  rows="output", cols="audio", heads=[0, 2], dtype=torch.float16)
print({name: (tuple(x.shape), x.dtype) for name, x in narrow.activations.items()})

# %% [markdown]
# A request that would not fit fails before anything runs, with its size and how to narrow it:

# %%
try:
    wb.trace(model, prompt, item.audios[0], capture="llm.layers.*.attn.pattern", max_bytes=2**10)
except wb.errors.TraceTooLargeError as error:
    print(f"{type(error).__name__}: {error}")

# %% [markdown]
# ## 3 · Widgets (interactive in JupyterLab)
# A layer/head browser over the nano trace, and a tag editor: one dropdown per tag slot; every change
# re-runs the model and redraws the output tokens' attention over the audio. (Headless, they render once.)

# %%
wb.widgets.AttentionBrowser(q)

# %%
wb.widgets.TagEditor(model, item.audios[0], prompt, max_new_tokens=16)

# %% [markdown]
# ## 4 · Exercises
# **1.** Which nano layer gives the audio tokens the most attention relative to their share of the
# visible positions, averaged over the six clips? Is its interval clear of 1?

# %%
# Solution
by_layer = enrichment.groupby("layer")["enrichment"].mean()
best = int(by_layer.idxmax())
ci = mean_ci(enrichment.loc[enrichment["layer"] == best, "enrichment"])
print(f"layer {best}: enrichment {ci.mean:.2f} [{ci.low:.2f}, {ci.high:.2f}] → "
      f"{'above' if ci.low > 1 else 'not clearly above'} 1")
assert by_layer[best] == by_layer.max()

# %% [markdown]
# **2.** In the Whisper lens, from which layer on is “ fox” the top-1 token?

# %%
# Solution
ranks = lens.to_pandas().set_index("layer")["rank( fox)"]
print(ranks.to_dict())
print("top-1 from layer:", ranks.index[ranks == 1][0])
