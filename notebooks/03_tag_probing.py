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
# # 03 · Tag probing: what each tag does, and where in the network it acts
#
# A Qwen-Audio prompt is a row of tags after the audio: transcription or analysis, audio language,
# task, text language, timestamps, output instructions. Whisper's decoder prefix is the same idea
# in fewer slots. This notebook asks four questions of both:
#
# 1. **Ablation** — change one slot (language swap, transcribe → translate, timestamps on/off): what
#    comes out?
# 2. **Attribution** — how much of the answer's log-probability does each slot carry, and which
#    40 ms of the audio?
# 3. **Activation patching and knockouts** — run *transcribe* and *translate*, copy activations from
#    the first run into the second, layer by layer, position group by group, head by head: where
#    does the task tag's effect live?
# 4. **Alignment** — from the attention of the output tokens to the audio, word timestamps (whisper's
#    DTW recipe), and a finder for the heads that align best against speech with known word times.
#
# Models: **Whisper base** (real weights, multilingual) on the demo sentences, and **nano**, the
# embedded Qwen-Audio (same classes, tags and checkpoint layout as the published model, trained in
# miniature on a synthetic corpus, so its answers are simple).

# %%
# %matplotlib inline
import warnings

import numpy as np
import pandas as pd

import workbench as wb
from workbench.models.whisper import STANDARD_PREFIX
from workbench.synth.speech import Voice, speak_words

wb.figures.use_style()
pd.set_option("display.max_colwidth", 90)
# nano and Whisper write a few characters the bundled font has no glyph for.
warnings.filterwarnings("ignore", message="Glyph .* missing from font")

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
# ## 2 · Patching: from a *transcribe* run into a *translate* run (Whisper base)
# Source A transcribes the German clip, target B translates it. The score is log p of A's own
# greedy output (the German transcript) as a continuation of each prompt: B gives it a low
# probability, A a high one. Each cell runs B with one layer's residual stream copied from A at one
# group of positions: the whole tag prefix, one slot of it (the `<|transcribe|>` / `<|translate|>`
# tag), or the continuation's own text positions. `recovery` = (patched − B) / (A − B): 1 means the
# patch alone turns the translate run into the transcribe run.

# %%
transcribe = "<|startoftranscript|><|de|><|transcribe|><|notimestamps|>"
translate = "<|startoftranscript|><|de|><|translate|><|notimestamps|>"
resid = wb.patch_sweep(whisper, transcribe, translate, german.path,
                       groups=["tags", "task", "timestamps", "text"])
print(f"log p of A's transcript: under A {resid.source:.2f}, under B {resid.clean:.2f} ({resid.measure})")
resid.plot(value="recovery")

# %% [markdown]
# Copying the task tag's own residual stream barely helps, even at layer 0: within the first layer
# the next position (`<|notimestamps|>`, the one that predicts the first word) has already read
# `<|translate|>`, and from then on that position carries the task up through every layer. The
# patched runs' greedy outputs, scored by WER against the German sentence, say the same:

# %%
wer = wb.patch_sweep(whisper, transcribe, translate, german.path, groups=["task", "timestamps"], layers=[0, 3, 5],
                     score="wer", reference=german.text, max_new_tokens=24)
print(f"WER of A's output {wer.source:.2f}, of B's {wer.clean:.2f}")
wer.to_pandas()[["layer", "column", "score", "output"]]

# %% [markdown]
# Head by head: each decoder self-attention head's output copied from A into B at every tag and
# text position (the slice of `self_attn.out_proj`'s input that belongs to the head). A couple of
# early heads carry most of the task.

# %%
heads = wb.patch_sweep(whisper, transcribe, translate, german.path, what="head")
heads.plot(value="recovery")

# %%
heads.best(5)

# %% [markdown]
# ## 3 · Word timestamps from cross-attention (Whisper base)
# Whisper's generation config names 8 alignment heads. Their cross-attention from each output token
# over the 20 ms encoder frames, normalised and median-filtered, gives a token × time matrix; dynamic
# time warping through it gives each word's start and end (openai/whisper's `timing.py` recipe).

# %%
words = wb.align(whisper, STANDARD_PREFIX, english.path)
words.plot()

# %%
words.to_pandas()

# %% [markdown]
# **Which heads align?** Speech synthesised word by word has exact word times. Each head alone is
# used for the DTW and scored by the mean absolute error of its word starts; the best ones can then
# replace the configured heads. (The first word starts at 0 by construction: the path starts with
# the clip, as in `timing.py`.)

# %%
sentence = "my brother bought seven green apples at noon".split()
speech = speak_words([(w, w, True) for w in sentence], Voice("en"), np.random.default_rng(1))
ranking = wb.find_alignment_heads(whisper, STANDARD_PREFIX, speech.audio, speech.words)
ranking.plot()

# %%
forced = " " + " ".join(sentence)
configured = wb.align(whisper, STANDARD_PREFIX, speech.audio, text=forced)
found = wb.align(whisper, STANDARD_PREFIX, speech.audio, text=forced, heads=ranking, top=6)
pd.DataFrame({"word": sentence, "true start (s)": [w.start for w in speech.words],
              "config heads": [w.start for w in configured.words], "6 best heads": [w.start for w in found.words]})

# %%
found.plot()

# %% [markdown]
# ## 4 · nano, the embedded Qwen-Audio
# The same questions for a decoder-only model, where the audio is 40 ms tokens in the LLM's own
# sequence. nano was trained in miniature (`recipes/train_nano.py`) on a synthetic corpus of
# espeak-ng speech in five languages, sounds and notes, with the official tags; its evaluation
# numbers are in `workbench/assets/nano/eval.json`.

# %%
nano = wb.load("nano")
clip = str(english.path)
asr = wb.preset("librispeech")
print(asr.render(), "→", repr(nano.generate(asr, [clip], max_new_tokens=24).text))

# %% [markdown]
# **Ablation**: every slot dropped, the task swapped, the audio language swapped. Each variant's
# greedy output, and at the first answer position the KL divergence from the base prompt's
# next-token distribution and the change in log p of the base output.

# %%
variants = wb.tags.drop_variants(asr) + wb.tags.swap_variants(asr, slot="task") + wb.tags.swap_variants(asr, slot="audio_lang",
                                                                                                        values=["de", "zh"])
ablation = wb.ablate(nano, clip, asr, variants=variants, max_new_tokens=16)
ablation.to_pandas(wide=True)[["output", "kl", "delta_logprob[base output]"]]

# %%
ablation.plot()

# %% [markdown]
# **Attribution** over the tag slots (captum: feature ablation and Shapley value sampling, a slot
# absent = dropped) and over the audio (occlusion of 200 ms windows), both of log p(base output).

# %%
wb.attribute_tags(nano, clip, asr).plot()

# %%
wb.attribute_audio(nano, clip, asr, method="occlusion", window=5).plot()

# %% [markdown]
# **Patching** transcribe → translate (English to German text) in the LLM. The audio positions come
# before the tags, so their residual stream is identical in both runs: patching them changes nothing,
# a built-in check. Then each LLM head's output, and one head at a time knocked out (zeroed) in the
# LLM and in the audio encoder.

# %%
speech_translate = wb.preset("covost2", src="en", tgt="de").render()
nano_resid = wb.patch_sweep(nano, asr.render(), speech_translate, clip)
nano_resid.plot(value="recovery")

# %%
wb.patch_sweep(nano, asr.render(), speech_translate, clip, what="head").plot(value="recovery")

# %%
wb.knockout_sweep(nano, asr, clip, stack="llm").plot()

# %%
wb.knockout_sweep(nano, asr, clip, stack="encoder").plot()

# %% [markdown]
# **Alignment** through the LLM's self-attention from the text to the audio tokens. nano names no
# alignment heads, so the head finder picks them on the synthetic sentence first; compare its word
# starts with Whisper's cross-attention above.

# %%
nano_ranking = wb.find_alignment_heads(nano, asr, speech.audio, speech.words, text=" ".join(sentence))
nano_ranking.plot()

# %%
nano_words = wb.align(nano, asr, speech.audio, text=" ".join(sentence), heads=nano_ranking, top=4)
nano_words.plot()

# %%
pd.DataFrame({"word": sentence, "true start (s)": [w.start for w in speech.words],
              "nano, 4 best heads": [w.start for w in nano_words.words]})
