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
# # 00 · Quickstart: a clip, its audio tokens, its tags
#
# Qwen-Audio hears a clip as a run of **audio tokens**, one per 40 ms, spliced into the prompt between
# `<audio>` and `</audio>`, and is told what to do by a sequence of **hierarchical tags** after it,
# e.g. `<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>`.
#
# **You will learn** to
# 1. load a clip and read it in seconds, with the 40 ms token grid on top (waveform and log-mel);
# 2. do the token arithmetic: samples → mel frames → encoder frames → audio tokens → prompt positions;
# 3. build, render, parse and validate tag prompts, spot the `<|startoftranscription|>` trap, and list
#    the variants that tag ablation iterates over;
# 4. run one prompt through a model (`MODEL`, by default the embedded nano) on a clip it was never trained on.
#
# **Runs** in about 20 s of CPU time (measured: 18 s on the shared 2-core machine; no weights except
# nano's 5 MB). The configuration cell below is read from the environment, so the same notebook runs a real checkpoint on a GPU:
# `WORKBENCH_MODEL=/models/Qwen-Audio WORKBENCH_DEVICE=cuda WORKBENCH_DTYPE=bfloat16`.

# %%
# %matplotlib inline
import os
import warnings

import pandas as pd
from IPython.display import Audio, display

import workbench as wb
from workbench.evaluation.replicas import synthetic_item
from workbench.figures.style import save_notebook_figure

wb.figures.use_style()
pd.set_option("display.max_colwidth", None)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model

# %% [markdown]
# ## 1 · A demo clip
# The package ships a few short clips made by `scripts/make_demo_clips.py`: one sentence each in
# English, German, French, Spanish and Mandarin (espeak-ng), and a synthetic C-major scale.

# %%
pd.DataFrame([{"name": c.name, "kind": c.kind, "language": c.language or "—",
               "seconds": c.extra["duration_s"], "text": c.text} for c in wb.demo.demo_clips()])

# %%
clip = wb.demo.demo_clip("speech_en")
audio = wb.load_audio(clip.path)  # float32 mono at 16 kHz
print(f"{clip.name}: {len(audio)} samples = {len(audio) / wb.audio.SAMPLE_RATE:.3f} s, peak {abs(audio).max():.2f}")

# %% [markdown]
# The waveform, with a light line at the start of every 40 ms audio token (the top axis counts them).

# %%
display(Audio(audio, rate=wb.audio.SAMPLE_RATE))
save_notebook_figure(wb.figures.plot_waveform(audio, wb.audio.SAMPLE_RATE, token_grid=True,
                                              title=f"{clip.name}: “{clip.text}”"), "speech_en_waveform")

# %% [markdown]
# `log_mel` always returns the full 30 s window, (80 bins, 3000 frames of 10 ms): the clip is
# zero-padded. Passing the clip's real length shades the padding, and the token grid stops where the
# clip's tokens stop (on a 30 s axis the grid thins out to every 25th token).

# %%
mel = wb.log_mel(audio)
print("mel:", tuple(mel.shape))
save_notebook_figure(wb.figures.plot_mel(mel, n_samples=len(audio), title="log-mel of the padded 30 s window"),
                     "speech_en_mel_padded_window")

# %% [markdown]
# Qwen-Audio itself only runs the encoder over the clip's own frames, so crop to those. **This is the
# log-mel of the demo sentence that notebooks 01 and 02 analyse**; they refer back here instead of
# drawing it again (the attention and attribution figures there carry it as their top panel).

# %%
display(Audio(audio, rate=wb.audio.SAMPLE_RATE))
save_notebook_figure(wb.figures.plot_mel(mel[:, :wb.audio.mel_frames(len(audio))], n_samples=len(audio),
                                         title=f"log-mel of “{clip.text}”, cropped to the clip"), "speech_en_mel")

# %% [markdown]
# ## 2 · Token arithmetic
# 16 kHz samples → mel frames (hop 160 = 10 ms) → encoder frames (conv2, stride 2 = 20 ms) →
# LLM audio tokens (average pool 2 = 40 ms) → prompt positions (the tokens plus the learned
# audio bos and eos). A 30 s clip is 750 tokens, 752 positions.

# %%
lengths = {clip.name: len(audio), "1 s": wb.audio.SAMPLE_RATE, "10 s": 10 * wb.audio.SAMPLE_RATE,
           "30 s window": 30 * wb.audio.SAMPLE_RATE}
pd.DataFrame([{"audio": name, "samples": n, "seconds": n / wb.audio.SAMPLE_RATE,
               "mel frames (10 ms)": wb.audio.mel_frames(n), "encoder frames (20 ms)": wb.audio.encoder_frames(n),
               "audio tokens (40 ms)": wb.audio.audio_tokens(n), "prompt positions": wb.audio.audio_span_tokens(n)}
              for name, n in lengths.items()])

# %% [markdown]
# Where each audio token sits in time (token 0 is the first after the audio bos):

# %%
n_tokens = wb.audio.audio_tokens(len(audio))
pd.DataFrame([{"token": k, "start (s)": wb.audio.token_to_seconds(k)[0], "end (s)": wb.audio.token_to_seconds(k)[1]}
              for k in (0, 1, 2, n_tokens - 2, n_tokens - 1)])

# %% [markdown]
# The scale clip comes with its notes (MIDI pitch, onset, duration); each note maps onto a run of tokens.

# %%
scale = wb.demo.demo_clip("tones_c_major")
scale_audio = wb.load_audio(scale.path)
pd.DataFrame([{**note, "first token": wb.audio.seconds_to_token(note["onset_s"]),
               "last token": wb.audio.seconds_to_token(note["onset_s"] + note["duration_s"])}
              for note in scale.extra["notes"]])

# %%
display(Audio(scale_audio, rate=wb.audio.SAMPLE_RATE))
save_notebook_figure(wb.figures.plot_mel(wb.log_mel(scale_audio)[:, :wb.audio.mel_frames(len(scale_audio))],
                                         n_samples=len(scale_audio), title=f"{scale.name}: {scale.text}"),
                     "c_major_scale_mel")

# %% [markdown]
# ## 3 · Tag prompts
# The official evaluation prompt of each benchmark is a preset (some take parameters):

# %%
benchmarks = {"librispeech": {}, "aishell1": {}, "covost2": {"src": "en", "tgt": "de"}, "clotho": {},
              "cochlscene": {}, "meld": {}, "vocalsound": {}, "nsynth": {},
              "clothoaqa": {"question": "Is a bird singing?"}, "srwt": {}}
pd.DataFrame([{"benchmark": name, "prompt": wb.preset(name, **fields).render()}
              for name, fields in benchmarks.items()])

# %% [markdown]
# A prompt built by hand: German speech translated into English text. It renders to the tag string,
# and parsing that string gives the same prompt back.

# %%
prompt = wb.TagPrompt(start="transcript", audio_lang="de", task="translate", text_lang="en",
                      timestamps=False, instructions=("itn",))
text = prompt.render()
print(text)
print("parse(render(p)) == p:", wb.TagPrompt.parse(text) == prompt)
pd.DataFrame(prompt.slots(), columns=["slot", "tag"])

# %% [markdown]
# **The README trap.** The official README's example writes `<|startoftranscription|>`, which is not a
# special token: the tokenizer splits it into plain text and the model sees no start tag at all.
# `check_tags` warns about every string that looks like a tag but is not one.

# %%
readme_prompt = "<|startoftranscription|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    unknown = wb.tags.check_tags(readme_prompt)
print("not tags:", unknown)
print(f"{caught[0].category.__name__}: {caught[0].message}")

# %% [markdown]
# Invalid prompts fail when they are built, with one message that names the value and the fix:

# %%
try:
    wb.TagPrompt(audio_lang="english")
except wb.errors.TagPromptError as error:
    print(f"{type(error).__name__}: {error}")

# %%
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning was shown above; here we want the error
        wb.TagPrompt.parse(readme_prompt)
except wb.errors.TagPromptError as error:
    print(f"{type(error).__name__}: {error}")

# %% [markdown]
# **Ablation variants.** Tag ablation asks what each slot does by changing one thing at a time:
# drop a slot, swap its value, or change the order. Each variant carries a label and its text
# (`prompt` is set only where the variant is itself a well-formed TagPrompt).

# %%
asr = wb.preset("librispeech")
variants = wb.tags.drop_variants(asr) + wb.tags.swap_variants(asr, slot="task") + wb.tags.permute_variants(asr)[:4]
pd.DataFrame([{"label": v.label, "prompt": v.prompt_text, "well-formed": v.prompt is not None}
              for v in variants])

# %% [markdown]
# ## 4 · One prompt through a model
# `wb.load(MODEL)` gives the embedded **nano** Qwen-Audio by default: the same classes, tags and
# checkpoint layout as the published model, trained in miniature on a synthetic corpus (notebook 04).
# nano only knows that corpus's world: short sentences from a grammar of about 70 English words (with
# their German, French, Spanish and Mandarin translations), synthetic sounds, scenes and notes. The demo
# sentence above ("The quick brown fox…") is outside it, so we give nano a clip from its **held-out
# test split** instead: `synthetic_item(task, i)` rebuilds test item *i* exactly as the corpus nano was
# evaluated on was built (nano never saw it in training). The prompt is the item's own tag prompt.

# %%
model = wb.load(MODEL, device=DEVICE, dtype=DTYPE)
item = next(it for it in (synthetic_item("asr", i) for i in range(40)) if it.fields["language"] == "en")
display(Audio(item.audios[0], rate=wb.audio.SAMPLE_RATE))
answer = model.generate(wb.TagPrompt.parse(item.prompt), item.audios[0], max_new_tokens=24).text
pd.DataFrame([{"prompt": item.prompt, "output": answer, "reference": item.reference,
               "correct": answer.strip() == item.reference}])

# %% [markdown]
# ## 5 · Exercises
# **1.** How many prompt positions do two 12.5 s clips cost together, and what share of the 2,048
# positions within which the workbench equals the official model is that?

# %%
# Solution: each clip is audio_span_tokens(samples) positions (its 40 ms tokens plus bos and eos).
two_clips = 2 * wb.audio.audio_span_tokens(int(12.5 * wb.audio.SAMPLE_RATE))
print(f"{two_clips} positions = {100 * two_clips / 2048:.1f} % of 2,048")
assert two_clips == 2 * (312 + 2)

# %% [markdown]
# **2.** Build the prompt that asks for Spanish speech translated into French text, with inverse text
# normalisation and no timestamps; render it and check that parsing gives it back. Which slot would a
# language-swap ablation of the *source* language change?

# %%
# Solution
exercise = wb.TagPrompt(start="transcript", audio_lang="es", task="translate", text_lang="fr",
                        timestamps=False, instructions=("itn",))
print(exercise.render())
assert wb.TagPrompt.parse(exercise.render()) == exercise
[v.label for v in wb.tags.swap_variants(exercise, slot="audio_lang")][:3]   # the audio_lang slot

# %% [markdown]
# Next: 01 takes the architecture apart with the published sizes, 02 traces what the model attends to.
