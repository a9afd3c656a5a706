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
# This notebook walks through both halves without a model:
#
# 1. load a demo clip and look at it in seconds, with the 40 ms token grid on top;
# 2. the token arithmetic: samples → mel frames → encoder frames → audio tokens → prompt positions;
# 3. tag prompts: the official presets, one built by hand, the `<|startoftranscription|>` trap,
#    a validation error, and the variants that tag ablation iterates over.

# %%
# %matplotlib inline
import warnings

import pandas as pd

from workbench.audio import (SAMPLE_RATE, SECONDS_PER_TOKEN, audio_span_tokens, audio_tokens,
                             encoder_frames, load_audio, log_mel, mel_frames, seconds_to_token,
                             token_to_seconds)
from workbench.demo import demo_clip, demo_clips
from workbench.figures.attention import plot_mel, plot_waveform
from workbench.figures.style import use_style
from workbench.tags import TagPrompt, check_tags, drop_variants, permute_variants, preset, swap_variants
from workbench.errors import TagPromptError

use_style()
pd.set_option("display.max_colwidth", None)

# %% [markdown]
# ## 1 · A demo clip
# The package ships a few short clips made by `scripts/make_demo_clips.py`: one sentence each in
# English, German, French, Spanish and Mandarin (espeak-ng), and a synthetic C-major scale.

# %%
pd.DataFrame([{"name": c.name, "kind": c.kind, "language": c.language or "—",
               "seconds": c.extra["duration_s"], "text": c.text} for c in demo_clips()])

# %%
clip = demo_clip("speech_en")
audio = load_audio(clip.path)  # float32 mono at 16 kHz
print(f"{clip.name}: {len(audio)} samples = {len(audio) / SAMPLE_RATE:.3f} s, peak {abs(audio).max():.2f}")

# %% [markdown]
# The waveform, with a light line at the start of every 40 ms audio token (the top axis counts them).

# %%
plot_waveform(audio, SAMPLE_RATE, token_grid=True, title=f"{clip.name}: “{clip.text}”")

# %% [markdown]
# `log_mel` always returns the full 30 s window, (80 bins, 3000 frames of 10 ms): the clip is
# zero-padded. Passing the clip's real length shades the padding, and the token grid stops where the
# clip's tokens stop (on a 30 s axis the grid thins out to every 25th token).

# %%
mel = log_mel(audio)
print("mel:", tuple(mel.shape))
plot_mel(mel, n_samples=len(audio), title="log-mel of the padded 30 s window")

# %% [markdown]
# Qwen-Audio itself only runs the encoder over the clip's own frames, so crop to those:

# %%
plot_mel(mel[:, :mel_frames(len(audio))], n_samples=len(audio), title="the same mel, cropped to the clip")

# %% [markdown]
# ## 2 · Token arithmetic
# 16 kHz samples → mel frames (hop 160 = 10 ms) → encoder frames (conv2, stride 2 = 20 ms) →
# LLM audio tokens (average pool 2 = 40 ms) → prompt positions (the tokens plus the learned
# audio bos and eos). A 30 s clip is 750 tokens, 752 positions.

# %%
lengths = {clip.name: len(audio), "1 s": SAMPLE_RATE, "10 s": 10 * SAMPLE_RATE, "30 s window": 30 * SAMPLE_RATE}
pd.DataFrame([{"audio": name, "samples": n, "seconds": n / SAMPLE_RATE,
               "mel frames (10 ms)": mel_frames(n), "encoder frames (20 ms)": encoder_frames(n),
               "audio tokens (40 ms)": audio_tokens(n), "prompt positions": audio_span_tokens(n)}
              for name, n in lengths.items()])

# %% [markdown]
# Where each audio token sits in time (token 0 is the first after the audio bos):

# %%
n_tokens = audio_tokens(len(audio))
pd.DataFrame([{"token": k, "start (s)": token_to_seconds(k)[0], "end (s)": token_to_seconds(k)[1]}
              for k in (0, 1, 2, n_tokens - 2, n_tokens - 1)])

# %% [markdown]
# The scale clip comes with its notes (MIDI pitch, onset, duration); each note maps onto a run of tokens.

# %%
scale = demo_clip("tones_c_major")
scale_audio = load_audio(scale.path)
pd.DataFrame([{**note, "first token": seconds_to_token(note["onset_s"]),
               "last token": seconds_to_token(note["onset_s"] + note["duration_s"])}
              for note in scale.extra["notes"]])

# %%
plot_mel(log_mel(scale_audio)[:, :mel_frames(len(scale_audio))], n_samples=len(scale_audio),
         title=f"{scale.name}: {scale.text}")

# %% [markdown]
# ## 3 · Tag prompts
# The official evaluation prompt of each benchmark is a preset (some take parameters):

# %%
benchmarks = {"librispeech": {}, "aishell1": {}, "covost2": {"src": "en", "tgt": "de"}, "clotho": {},
              "cochlscene": {}, "meld": {}, "vocalsound": {}, "nsynth": {},
              "clothoaqa": {"question": "Is a bird singing?"}, "srwt": {}}
pd.DataFrame([{"benchmark": name, "prompt": preset(name, **fields).render()}
              for name, fields in benchmarks.items()])

# %% [markdown]
# A prompt built by hand: German speech translated into English text. It renders to the tag string,
# and parsing that string gives the same prompt back.

# %%
prompt = TagPrompt(start="transcript", audio_lang="de", task="translate", text_lang="en",
                   timestamps=False, instructions=("itn",))
text = prompt.render()
print(text)
print("parse(render(p)) == p:", TagPrompt.parse(text) == prompt)
pd.DataFrame(prompt.slots(), columns=["slot", "tag"])

# %% [markdown]
# **The README trap.** The official README's example writes `<|startoftranscription|>`, which is not a
# special token: the tokenizer splits it into plain text and the model sees no start tag at all.
# `check_tags` warns about every string that looks like a tag but is not one.

# %%
readme_prompt = "<|startoftranscription|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    unknown = check_tags(readme_prompt)
print("not tags:", unknown)
print(f"{caught[0].category.__name__}: {caught[0].message}")

# %% [markdown]
# Invalid prompts fail when they are built, with one message that names the value and the fix:

# %%
try:
    TagPrompt(audio_lang="english")
except TagPromptError as error:
    print(f"{type(error).__name__}: {error}")

# %%
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning was shown above; here we want the error
        TagPrompt.parse(readme_prompt)
except TagPromptError as error:
    print(f"{type(error).__name__}: {error}")

# %% [markdown]
# **Ablation variants.** Tag ablation asks what each slot does by changing one thing at a time:
# drop a slot, swap its value, or change the order. Each variant carries a label and its text
# (`prompt` is set only where the variant is itself a well-formed TagPrompt).

# %%
asr = preset("librispeech")
variants = drop_variants(asr) + swap_variants(asr, slot="task") + permute_variants(asr)[:4]
pd.DataFrame([{"label": v.label, "prompt": v.prompt_text, "well-formed": v.prompt is not None}
              for v in variants])

# %% [markdown]
# Next: the other notebooks in this folder load a model and run these prompts on the clips.
