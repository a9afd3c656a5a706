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
# # 03 · Tag probing: what each tag does to the answer
#
# A Qwen-Audio prompt is a row of tags after the audio: transcription or analysis, audio language,
# task, text language, timestamps, output instructions. Whisper's decoder prefix is the same idea
# in fewer slots. **You will learn** to
#
# 1. **ablate** a prompt — drop a slot, swap its value — and read what comes out, the shift of the
#    next-token distribution (KL, JS) and the change in log p of the right answer;
# 2. **attribute** log p of the answer to the tag slots (captum feature ablation, Shapley sampling) and
#    to 200 ms stretches of the audio (occlusion), and choose an occlusion baseline that stays on the
#    model's input distribution;
# 3. measure over several clips (mean and bootstrap CI) instead of trusting one.
#
# Where in the network the task tag acts (activation patching, head knockouts) and word timestamps
# from attention are in notebook 05.
#
# Models: **Whisper base** (real weights, multilingual) on the demo sentences, and `MODEL`, by default
# **nano**, the embedded Qwen-Audio (same classes, tags and checkpoint layout as the published model,
# trained in miniature on a synthetic corpus; notebook 04).
#
# **Runs** in about 2 min of CPU time (measured: 128 s on the shared 2-core machine).
# `WORKBENCH_MODEL=/models/Qwen-Audio WORKBENCH_DEVICE=cuda WORKBENCH_DTYPE=bfloat16` runs section 2 on the published model.

# %%
# %matplotlib inline
import os

import numpy as np
import pandas as pd
from IPython.display import Audio, display

import workbench as wb
from workbench.analysis.stats import mean_ci
from workbench.evaluation.replicas import synthetic_item
from workbench.figures.style import save_notebook_figure
from workbench.synth import grammar

wb.figures.use_style()
pd.set_option("display.max_colwidth", 90)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model

# %% [markdown]
# ## 1 · Whisper base: each slot's effect on the output
# `wb.ablate` scores variants on a cached audio prefix inside a decoder-only LLM; Whisper
# reads the audio through cross-attention instead, so here each variant is simply generated greedily
# (plain argmax, none of Whisper's own decoding rules). The German sentence is transcribed, transcribed
# as if it were English, translated, given no timestamp tag at all (the model then picks one itself),
# and transcribed with timestamps (the prefix ends in `<|0.00|>`, the first timestamp); the English
# one is transcribed as if it were German.

# %%
whisper = wb.load("whisper-base")
english, german = wb.demo.demo_clip("speech_en"), wb.demo.demo_clip("speech_de")
display(Audio(str(german.path)), Audio(str(english.path)))
variants = [
    (german, "base: German, transcribe", "<|startoftranscript|><|de|><|transcribe|><|notimestamps|>"),
    (german, "language swap de → en", "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"),
    (german, "task swap transcribe → translate", "<|startoftranscript|><|de|><|translate|><|notimestamps|>"),
    (german, "no timestamp tag", "<|startoftranscript|><|de|><|transcribe|>"),
    (german, "timestamps on", "<|startoftranscript|><|de|><|transcribe|><|0.00|>"),
    (english, "language swap en → de", "<|startoftranscript|><|de|><|transcribe|><|notimestamps|>"),
]
pd.DataFrame([{"clip": clip.name, "change": change, "prefix": prefix,
               "output": whisper.generate(prefix, clip.path, max_new_tokens=40).text}
              for clip, change, prefix in variants])

# %% [markdown]
# ## 2 · nano: inside its own world
# nano was trained only on a synthetic corpus (`workbench.synth`): its speech is sentences of 3–8 words
# from a small grammar whose English vocabulary is the list below (German, French, Spanish and Mandarin
# have the translations of the same words), plus synthetic sounds, scenes, vocalisations and notes.
# The demo sentence “The quick brown fox jumps over the lazy dog” is **outside** that world (“quick”,
# “jumps”, “over”, “lazy” are not in it): nano's answer to it is a hallucination, and the log-prob of a
# hallucinated transcript says nothing about how the tags steer a correct one. So every nano probe
# here runs on clips from its **held-out test split** (`synthetic_item(task, i)` rebuilds test item *i*
# of the corpus nano was evaluated on; their sentences never occur in training) and scores the
# **reference** transcript, not nano's own output.

# %%
words = grammar.vocabulary("en")
print(f"{len(words)} English words: {' '.join(words)}")
print("outside the grammar:", [w for w in english.text.lower().strip(".").split() if w not in words])

# %%
model = wb.load(MODEL, device=DEVICE, dtype=DTYPE)
items = [it for it in (synthetic_item("asr", i) for i in range(80)) if it.fields["language"] == "en"][:6]
outputs = [model.generate(wb.TagPrompt.parse(it.prompt), it.audios[0], max_new_tokens=24).text for it in items]
heard = pd.DataFrame({"reference": [it.reference for it in items], "nano": outputs})
heard["correct"] = heard["nano"].str.strip() == heard["reference"]
heard

# %% [markdown]
# nano is right on most of these and **wrong** on the rest (a swapped animal, usually): those are
# recognition failures, and the probes below score the reference on them too, so a failing clip shows
# up as a low base log p rather than as a confident wrong answer.
#
# **Ablation** on the first clip: every slot dropped, the task swapped, the audio language swapped. Each
# variant's greedy output; KL and JS between the base prompt's and the variant's next-token
# distributions **at the first answer position** — the one place where every variant has the same
# context (audio and tags, no answer yet), so the distributions are comparable; after it each variant
# continues from its own output — and Δ log p of the whole reference, and of nano's base output.

# %%
item = items[0]
prompt = wb.TagPrompt.parse(item.prompt)
variants = (wb.tags.drop_variants(prompt) + wb.tags.swap_variants(prompt, slot="task")
            + wb.tags.swap_variants(prompt, slot="audio_lang", values=["de", "zh"]))
targets = {"reference": item.reference, "nano's output": outputs[0]}
ablation = wb.ablate(model, item.audios[0], prompt, variants=variants, targets=targets, max_new_tokens=16)
ablation.to_pandas(wide=True)[["output", "kl", "js", "delta_logprob[reference]"]]

# %% [markdown]
# KL(p‖q) ≥ 0 always; values like 1e-7 are float rounding of "no change" (a negative one would be
# rounding too), and the figure shows them as 0. KL/JS share one scale from 0 (nats) and the Δ log p
# columns share one diverging scale, so cells can be compared across columns of a block.

# %%
display(Audio(item.audios[0], rate=wb.audio.SAMPLE_RATE))
save_notebook_figure(ablation.plot(), "nano_tag_ablation")

# %% [markdown]
# **Over several clips.** The same variants on all six held-out clips: the mean Δ log p(reference) of
# each variant with a 95 % bootstrap CI, and on how many clips the greedy output changed.

# %%
rows = []
for it, base_output in zip(items, outputs):
    result = wb.ablate(model, it.audios[0], wb.TagPrompt.parse(it.prompt), variants=variants,
                       targets={"reference": it.reference}, max_new_tokens=16)
    for row in result.variants:
        rows.append({"variant": row.label, "delta": row.logprob("reference") - result.base.logprob("reference"),
                     "kl": max(row.kl, 0.0), "changed": row.output.strip() != base_output.strip()})
per_clip = pd.DataFrame(rows)
summary = pd.DataFrame([{"variant": label, **mean_ci(group["delta"]).as_dict(), "mean KL": group["kl"].mean(),
                         "outputs changed": int(group["changed"].sum())}
                        for label, group in per_clip.groupby("variant", sort=False)]).set_index("variant")
summary.rename(columns={"mean": "mean Δ log p(reference)"}).round(3)

# %% [markdown]
# ## 3 · Attribution
# Over the tag slots (captum: feature ablation and Shapley value sampling; a slot absent = dropped), of
# log p(reference) on the first clip:

# %%
tag_attribution = wb.attribute_tags(model, item.audios[0], prompt, target=item.reference)
save_notebook_figure(tag_attribution.plot(), "nano_tag_attribution")

# %% [markdown]
# Over the audio: occlusion of 200 ms windows (five 40 ms tokens), score = log p(reference) with the
# audio minus with the window occluded. **The baseline matters.** Filling the window with zero vectors
# (`fill="zeros"`) puts inputs in front of the LLM that it never saw in training (no projected audio
# token is all zeros), so part of the drop measures "off-distribution input", not "this stretch of
# audio mattered". Filling with the clip's own **mean audio token** (`fill="mean"`) stays closer to what
# the LLM knows; we use it and show zeros for contrast. (Noise or a silent clip's tokens are other
# reasonable baselines; none is neutral, so report which one you used.)

# %%
display(Audio(item.audios[0], rate=wb.audio.SAMPLE_RATE))
occlusion = wb.attribute_audio(model, item.audios[0], prompt, method="occlusion", window=5, fill="mean",
                               target=item.reference)
save_notebook_figure(occlusion.plot(), "nano_audio_occlusion_mean_fill")

# %%
zeros = wb.attribute_audio(model, item.audios[0], prompt, method="occlusion", window=5, fill="zeros",
                           target=item.reference)
pd.DataFrame({"fill": ["mean", "zeros"], "sum of scores (nats)": [occlusion.scores.sum(), zeros.scores.sum()],
              "largest drop (nats)": [occlusion.scores.max(), zeros.scores.max()],
              "at (s)": [occlusion.seconds[occlusion.scores.argmax()], zeros.seconds[zeros.scores.argmax()]],
              "correlation with mean-fill": [1.0, float(np.corrcoef(occlusion.scores, zeros.scores)[0, 1])]})

# %% [markdown]
# ## 4 · Exercises
# **1.** Across the six clips, which dropped slot costs the reference the most log-probability, and is
# its interval clear of zero?

# %%
# Solution
drops = summary[summary.index.str.startswith("drop")]
worst = drops["mean"].idxmin()
low, high = drops.loc[worst, ["ci_low", "ci_high"]]
print(f"{worst}: Δ log p = {drops.loc[worst, 'mean']:.2f} [{low:.2f}, {high:.2f}] → "
      f"{'clear of' if high < 0 else 'not clear of'} zero")
assert drops.loc[worst, "mean"] == drops["mean"].min()

# %% [markdown]
# **2.** Score a label set instead of one transcript: on the first clip, compare log p of the reference
# with log p of the same sentence with its last word replaced (“… eats” → “… sleeps”) under the base
# prompt and with the audio language swapped to German. Which prompt separates them better?

# %%
# Solution
last = item.reference.split()[-1]
other = item.reference.rsplit(" ", 1)[0] + (" sleeps" if last != "sleeps" else " eats")
pair = wb.ablate(model, item.audios[0], prompt, variants=wb.tags.swap_variants(prompt, slot="audio_lang", values=["de"]),
                 targets={"reference": item.reference, "other": other}, max_new_tokens=4)
margins = {row.label: row.logprob("reference") - row.logprob("other") for row in pair.rows}
print({label: round(margin, 2) for label, margin in margins.items()})
