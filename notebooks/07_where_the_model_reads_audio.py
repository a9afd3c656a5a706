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
# # 07 · Where does the model read the audio?
#
# Notebooks 02 and 05 looked at one clip at a time: attention maps say where a position *looks*,
# patching what one prompt change *does*. Here the question is causal and over several clips:
# **in which layers, and through which positions, does the LLM take in the audio?**
#
# **Learning objectives.** After this notebook you can
# 1. cut attention edges (answer → audio, tags → audio, answer → tags, audio → far audio) per layer
#    with `wb.edge_knockout_many` and read the mean effect with its bootstrap CI;
# 2. split an answer's logit into the embedding's, each layer's and each head's direct share
#    (`wb.direct_logit_attribution`), at the answer and at the audio positions;
# 3. use attribution patching (`wb.attribution_patch`) as a cheap first-order estimate of real
#    patching, and measure how well it agrees;
# 4. trace with corrupted audio (`wb.causal_trace_many`): which layer, which seconds of the clip;
# 5. fit a linear probe per layer (`wb.probe`) and read the logit lens at the audio positions;
# 6. say which of these carry over to Whisper, whose decoder reads the audio by cross-attention,
#    and trace corrupted audio in Whisper's encoder instead, its 20 ms frames binned by time.
#
# Everything runs on the trained embedded nano (4 LLM layers × 6 heads) over clips of **its own
# held-out test split** (shipped in `workbench/assets/nano/eval_clips`), so the answers are ones it
# gets right or nearly right; means come with 95 % bootstrap intervals (`mean_ci`), which four clips
# make wide. The last cell runs the same sweeps on a real Qwen-Audio checkpoint on a GPU.
#
# **Runs** in about 90 s of CPU time on 2 idle cores (the measured time is in the commit message).
# `WORKBENCH_MODEL=/models/Qwen-Audio WORKBENCH_DEVICE=cuda WORKBENCH_DTYPE=bfloat16` runs the last
# section on the published model; on nano it skips.

# %%
# %matplotlib inline
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from IPython.display import Audio, display

import workbench as wb
from workbench.analysis.attribution_patching import agreement
from workbench.analysis.stats import mean_ci
from workbench.figures.style import save_notebook_figure
from workbench.models.whisper import STANDARD_PREFIX

wb.figures.use_style()
pd.set_option("display.max_colwidth", 80)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model
REAL_CLIPS = Path("../../shared/audio")                  # real clips (jfk.flac, LibriSpeech), when present
CLIPS = Path(wb.__file__).parent / "assets" / "nano" / "eval_clips"   # nano's held-out test clips

# %% [markdown]
# ## 1 · nano and its held-out clips
# The shipped held-out clips come with a manifest: the task, the prompt nano was trained with, the
# reference. The four English transcription clips share one prompt, so every sweep below runs the
# same prompt over four different recordings.

# %%
nano = wb.load("nano")
manifest = pd.DataFrame([json.loads(line) for line in (CLIPS / "manifest.jsonl").read_text().splitlines()])
asr = manifest[manifest["task"] == "asr"].reset_index(drop=True)
prompt = wb.TagPrompt.parse(asr["prompt"][0])
paths = [str(CLIPS / name) for name in asr["audio"]]
asr["nano"] = [nano.generate(prompt, path, max_new_tokens=24).text.strip() for path in paths]
asr["exact"] = asr["nano"] == asr["reference"]
display(Audio(paths[0]))
asr[["id", "duration", "reference", "nano", "exact"]]

# %% [markdown]
# ## 2 · Attention-edge knockout: which layer reads the audio, through which positions?
# Each edge blocks one group of positions from attending to another (the attention score set to −∞
# before the softmax), in one layer alone or in all four together; the score is log p of nano's own
# intact greedy answer, and Δ = knocked out − intact (negative: the answer got less likely). Position 0
# (`<audio>`, the attention sink) and each position itself always stay in reach, so nothing turns NaN.
# "audio→audio>window" keeps each audio token from reading audio more than 0.5 s away.

# %%
edges = wb.edge_knockout_many(nano, [(prompt, path) for path in paths], window_s=0.5)
edge_table = edges.to_pandas()
edge_table.round(2)

# %%
save_notebook_figure(edges.plot(), "nano_edge_knockout_per_layer")

# %% [markdown]
# Reading it: the row "all" says how much each route matters when cut everywhere; the single-layer
# rows say where. The printout names, per edge, the single layer whose cut costs the most and whether
# its interval excludes 0 (four clips: a CI that touches 0 is no finding).

# %%
single = edge_table[edge_table["layer"] != "all"]
for edge, rows in single.groupby("edge", sort=False):
    worst = rows.loc[rows["delta"].idxmin()]
    everywhere = edge_table[(edge_table["edge"] == edge) & (edge_table["layer"] == "all")].iloc[0]
    print(f"{edge:22s} all layers Δ {everywhere['delta']:7.2f} [{everywhere['delta_low']:.2f}, "
          f"{everywhere['delta_high']:.2f}]   worst single layer {worst['layer']}: Δ {worst['delta']:6.2f} "
          f"[{worst['delta_low']:.2f}, {worst['delta_high']:.2f}]"
          f"{'' if worst['delta_high'] < 0 else '  (CI reaches 0)'}")

# %% [markdown]
# ## 3 · Direct logit attribution
# At the prompt's last position (it predicts the first answer token) and then at every answer
# position, each component's direct share of the logit of the token nano writes. The shares sum to
# the real logit exactly (the final norm's scale frozen at the real residual's); what DLA cannot see
# is indirect effects: a layer 0 head that feeds a layer 3 head shows up under layer 3.

# %%
dla = wb.direct_logit_attribution(nano, prompt, paths[0], position="answer")
print(f"{len(dla.positions)} answer positions; components sum to the logit: "
      f"max |total − logit| = {np.abs(dla.total - dla.logits).max():.1e}")
save_notebook_figure(dla.plot(), "nano_dla_answer_clip0")

# %% [markdown]
# Over the four clips: the mean share per component over each clip's answer positions.

# %%
shares = []
for k, path in enumerate(paths):
    table = wb.direct_logit_attribution(nano, prompt, path, position="answer").to_pandas()
    table["component"] = table["component"] + table["layer"].astype("string").radd(" ").fillna("")
    shares.append(table.groupby("component", sort=False)["value"].mean().rename(k))
shares = pd.concat(shares, axis=1)
dla_summary = pd.DataFrame({name: mean_ci(row.to_numpy()).as_dict() for name, row in shares.iterrows()}).T
dla_summary.round(2)

# %% [markdown]
# **At the audio positions.** Each audio token's own next-token prediction, split the same way: the
# audio positions were never trained to predict anything (nano's loss is on the answer only), so
# what they "predict" is a by-product; the figure averages over the clip's audio tokens.

# %%
dla_audio = wb.direct_logit_attribution(nano, prompt, paths[0], position="audio")
audio_table = dla_audio.to_pandas()
print(f"{len(dla_audio.positions)} audio positions; most frequent predicted tokens:",
      pd.Series(dla_audio.targets).value_counts().head(3).to_dict())
save_notebook_figure(dla_audio.plot(), "nano_dla_audio_positions_clip0")

# %% [markdown]
# ## 4 · Attribution patching against real patching
# Real head patching runs the corrupted prompt once per head (24 runs on nano, 1,024 on the 7B);
# attribution patching estimates all of them from one clean forward and one corrupted forward +
# backward. The corruption here is a tag: the text-language tag `<|en|>` → `<|de|>` (translate into
# German instead of transcribing); the score is log p of the clean answer.

# %%
clean_text = prompt.render()
german = clean_text.replace("<|en|><|notimestamps|>", "<|de|><|notimestamps|>")
estimate = wb.attribution_patch(nano, clean_text, german, paths[0], what="head")
patched = wb.patch_sweep(nano, clean_text, german, paths[0], what="head")
agree = agreement(estimate, patched)
print(f"{agree.n} heads: Pearson r {agree.pearson:.2f}, Spearman {agree.spearman:.2f}")
estimate.top(4)[["layer", "column", "effect"]]

# %%
save_notebook_figure(agree.plot(), "nano_attribution_vs_real_patching")

# %% [markdown]
# ## 5 · Causal tracing with corrupted audio
# Now the audio is what differs: each clip again with white noise at 0 dB SNR. The clean residual
# stream of one layer is restored at one column (the tags, the audio in four time bins t0…t3, the
# answer), and recovery = (restored − corrupt) / (clean − corrupt): 1 brings back all the noise took.

# %%
noisy = wb.corrupt_audio(wb.load_audio(paths[0]), "noise", snr_db=0)
display(Audio(noisy, rate=wb.audio.SAMPLE_RATE))
traced = wb.causal_trace_many(nano, clean_text, paths, "noise", bins=4)
trace_summary = traced.summary()
trace_summary.pivot(index="layer", columns="column", values="mean").round(2)

# %%
save_notebook_figure(traced.plot(), "nano_causal_trace_noise")

# %%
audio_cells = trace_summary[trace_summary["kind"] == "audio"]
best = audio_cells.loc[audio_cells["mean"].idxmax()]
print(f"best audio cell: layer {best['layer']}, {best['column']}: recovery {best['mean']:.2f} "
      f"[{best['ci_low']:.2f}, {best['ci_high']:.2f}]")
print("mean audio recovery per layer:", audio_cells.groupby("layer")["mean"].mean().round(2).to_dict())

# %% [markdown]
# ## 6 · A probe per layer, and the logit lens at the audio positions
# Which layer holds *what kind of sound* linearly? All the shipped held-out clips (speech, sound
# events, music), every one under the same transcription prompt so that no tag gives the label away,
# averaged over their audio tokens; one logistic regression per LLM layer, scored on a seeded
# held-out quarter. A handful of held-out clips make a coarse measure (the count is printed).

# %%
kind = manifest["task"].map({"asr": "speech", "s2tt": "speech", "ser": "speech", "srwt": "speech",
                             "aac": "sound", "asc": "sound", "aqa": "sound", "vsc": "sound", "mna": "music"})
probed = wb.probe(nano, [str(CLIPS / name) for name in manifest["audio"]], "llm.layers.{}.resid_post",
                  labels=list(kind), prompt=prompt)
print(f"{len(manifest)} clips ({kind.value_counts().to_dict()}), {probed.n_test} held out")
save_notebook_figure(probed.plot(), "nano_probe_sound_kind_per_layer")
probed.to_pandas().round(2)

# %% [markdown]
# The logit lens at every audio token of the first clip: the last layer's top token per 40 ms.

# %%
lens = wb.logit_lens(nano, prompt, paths[0], position="audio")
last = lens.to_pandas().query(f"layer == '{lens.layers[-1]}'")
print(" ".join(last["top_1"].head(16)))
save_notebook_figure(lens.plot(), "nano_logit_lens_audio_positions")

# %% [markdown]
# ## 7 · Whisper: the same questions through cross-attention
# Whisper tiny.en's decoder has no audio positions: it reads the encoder's output by
# cross-attention, so "answer → audio" blocks the answer's cross-attention (it then reads nothing of
# the audio), "audio → far audio" does not exist, and causal tracing moves into the encoder (below).
# On a real clip from `../shared/audio` when present, else the demo sentence.

# %%
whisper = wb.load("whisper-tiny.en")
real = REAL_CLIPS / "jfk.flac"
clip = str(real) if real.exists() else str(wb.demo.demo_path("speech_en"))
display(Audio(clip))
cut = wb.edge_knockout(whisper, STANDARD_PREFIX, clip, edges=[("answer", "audio"), ("answer", "tags")],
                       max_new_tokens=32)
cut.to_pandas().round(2)

# %%
dla_whisper = wb.direct_logit_attribution(whisper, STANDARD_PREFIX, clip)
print(f"first token {dla_whisper.targets[0]!r}: logit {dla_whisper.logits[0]:.2f}")
save_notebook_figure(dla_whisper.plot(), "whisper_dla_first_token")
dla_whisper.to_pandas().query("component in ('embed', 'attn', 'cross', 'mlp')")[["component", "layer", "value"]].round(2)

# %% [markdown]
# **Causal tracing in the encoder.** The audio lives in Whisper's encoder, so that is where
# `wb.causal_trace` restores it (`stack="encoder"`, Whisper's default): per encoder layer, the clean
# residual stream (`encoder.layers.{i}.resid_post`) at one time bin of the clip's 20 ms frames, the
# corrupted clip encoded again with it, and log p of the clean transcript given the decoder prefix.
# Whisper pads every clip to 30 s: the bins split the clip's own frames, and the padding frames are
# one more column, "pad" (not inert: self-attention mixes the clip into them). Three clips (JFK, a
# LibriSpeech utterance and a 0.9 s cut of it; without `../shared`, the demo sentence and two of
# nano's clips), noise at 0 dB, four bins: 4 layers × 5 columns per clip, each restore running the
# encoder from the restored layer on (about 20 s of CPU in all).
# (`stack="decoder"` traces the decoder's tags and answer positions instead.)

# %%
english_only = "<|startoftranscript|><|notimestamps|>"    # tiny.en: no language or task tag
libri_clips = [REAL_CLIPS / "1272-128104-0000.flac", REAL_CLIPS / "1272-128104-0000-middle_classes.wav"]
whisper_clips = [clip, *(map(str, libri_clips) if real.exists() else paths[:2])]
whisper_trace = wb.causal_trace_many(whisper, english_only, whisper_clips, "noise", bins=4)
for path, one in zip(whisper_clips, whisper_trace.traces):
    print(f"{Path(path).name}: log p clean {one.clean:.2f}, corrupted {one.corrupt:.2f}; "
          f"bins {', '.join(one.column_labels())}")
save_notebook_figure(whisper_trace.plot(), "whisper_causal_trace_encoder")
whisper_trace.summary().pivot(index="layer", columns="column", values="mean").round(2)

# %% [markdown]
# Reading it: no single quarter of a clip brings everything back, and the first quarter brings back
# the most at every layer (on the three real clips 0.57 at layer 0 up to 0.68 at layer 3, wide
# intervals: three clips); the padding, although the noise changed it, brings back nothing.

# %% [markdown]
# ## 8 · The real model (GPU)
# The same sweeps on a Qwen-Audio checkpoint (`WORKBENCH_MODEL` a directory, `WORKBENCH_DEVICE=cuda`,
# `WORKBENCH_DTYPE=bfloat16`), on the real clips. Before a sweep on the 7B, `memory_plan`
# (`workbench/analysis/memory.py`) says what each verb holds at full size. On nano this cell skips.

# %%
if MODEL != "nano":
    from workbench.analysis.memory import memory_plan
    model = wb.load(MODEL, device=DEVICE, dtype=DTYPE)
    real_paths = [str(p) for p in sorted(REAL_CLIPS.glob("*.flac"))][:4]
    librispeech = wb.preset("librispeech", lang="en")
    display(memory_plan(model, seq_len=1100, audio_seconds=30.0))
    big_edges = wb.edge_knockout_many(model, [(librispeech, p) for p in real_paths], window_s=0.5)
    save_notebook_figure(big_edges.plot(), "real_edge_knockout_per_layer")
    display(big_edges.to_pandas().round(2))
    real_text = librispeech.render()
    real_german = real_text.replace("<|en|><|notimestamps|>", "<|de|><|notimestamps|>")
    heads = wb.attribution_patch(model, real_text, real_german, real_paths[0], what="head")
    save_notebook_figure(heads.plot(), "real_attribution_patching_heads")
    display(heads.top(10))
    real_trace = wb.causal_trace_many(model, real_text, real_paths, "noise", bins=8)
    save_notebook_figure(real_trace.plot(), "real_causal_trace_noise")
    torch.cuda.empty_cache() if DEVICE.startswith("cuda") else None
else:
    print("MODEL is nano: the real-model cell skips (set WORKBENCH_MODEL to a Qwen-Audio checkpoint directory)")

# %% [markdown]
# ## 9 · Exercises
# **1.** Over the four clips, is cutting answer → audio in layer 0 alone worse than cutting it in the
# last layer alone? Compare the two intervals: do they overlap?

# %%
# Solution
answer_audio = edge_table[edge_table["edge"] == "answer→audio"].set_index("layer")
first_layer, last_layer = answer_audio.loc["0"], answer_audio.loc[str(len(nano.adapter.sequence.layers) - 1)]
print(f"layer 0: {first_layer['delta']:.2f} [{first_layer['delta_low']:.2f}, {first_layer['delta_high']:.2f}]; "
      f"last: {last_layer['delta']:.2f} [{last_layer['delta_low']:.2f}, {last_layer['delta_high']:.2f}]")
overlap = first_layer["delta_low"] <= last_layer["delta_high"] and last_layer["delta_low"] <= first_layer["delta_high"]
print("the intervals overlap: four clips cannot tell them apart" if overlap else "the intervals are apart")

# %% [markdown]
# **2.** Which single head does attribution patching rank first for the en→de tag swap, and what did
# real patching of that head give? Is the estimate an over- or an under-estimate?

# %%
# Solution
top = estimate.top(1).iloc[0]
real_value = agree.table[(agree.table["layer"] == top["layer"]) & (agree.table["column"] == top["column"])]
print(f"layer {top['layer']} {top['column']}: estimated {top['effect']:.2f}, patched "
      f"{float(real_value['patched'].iloc[0]):.2f}")

# %% [markdown]
# **3.** In the causal trace, at which layer does restoring the answer positions alone bring back
# most of what the noise took? (Hint: `trace_summary`, `column == 'answer'`.)

# %%
# Solution
answer_rows = trace_summary[trace_summary["column"] == "answer"].set_index("layer")
print(answer_rows[["mean", "ci_low", "ci_high"]].round(2))
print("most recovery at layer", int(answer_rows["mean"].idxmax()))
