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
# # 18 · MNA: music note analysis on NSynth
#
# **Learning objectives.** After this notebook you can
# 1. read an answer written in *tags* rather than words (`<|pitch|><|midi_pitch_60|>`,
#    `<|velocity|><|midi_velocity_100|>`, `<|instrument|>…`, `<|sonic|>…`) as the official parser does;
# 2. say what the paper's five numbers measure, and show a quirk in the official chroma accuracy;
# 3. read how far a model's pitches land from the truth, octave errors included.
#
# **Run time**: about 1 minute on 2 CPU cores with nano. Configuration from the environment:
# `WORKBENCH_MODEL`, `WORKBENCH_DEVICE`, `WORKBENCH_DTYPE`, `WORKBENCH_DATA` (a folder holding
# `nsynth-test/` as distributed: `examples.json` beside `audio/`); without it, a native-layout replica is
# written to a temporary folder. Cells marked **real model only** skip on nano.

# %%
# %matplotlib inline
import os

import pandas as pd
from IPython.display import Audio, display

import workbench as wb
from workbench.evaluation import metrics
from workbench.evaluation.walkthrough import official_prompt, paper_table, prompt_table, walkthrough
from workbench.figures.style import save_notebook_figure
from workbench.figures.tasks import plot_histogram
from workbench.tags import swap_variants

wb.figures.use_style()
pd.set_option("display.max_colwidth", 110)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model
DATA = os.environ.get("WORKBENCH_DATA")                 # a folder holding nsynth-test/; None: replica
LIMIT = int(os.environ.get("WORKBENCH_LIMIT", "6"))     # notes
REAL_CLIP = "../../shared/audio/music.wav"

# %% [markdown]
# ## 1 · The task
# NSynth is 300,000 single notes of 4 s from about a thousand instruments. For each note: its pitch (MIDI
# 0–127), how hard it was played (velocity), the instrument family (11: bass, brass, flute, guitar,
# keyboard, mallet, organ, reed, string, synth lead, vocal), and ten "sonic qualities" (bright, dark,
# percussive…). Pitch is hard near octaves (a strong overtone can sound an octave up), velocity is only
# loosely related to loudness, and the qualities are sparse, subjective labels.
#
# ## 2 · The official prompt, tag by tag

# %%
task = wb.get_task("nsynth")
prompt = official_prompt(task)
print("<audio>FILE</audio>" + prompt.render())
prompt_table(prompt, {
    "start": "an analysis task", "audio_lang": "unknown: no speech", "task": "keyword: a structured answer",
    "text_lang": "English field values", "timestamps": "no time tags",
    "instructions": "note analysis: answer with the pitch, velocity, instrument and qualities tags"})

# %%
print("max_new_tokens:", task.max_new_tokens)

# %% [markdown]
# ## 3 · The official scoring
# `evaluate_note_analysis.py` parses the answer with regular expressions: the first `<|midi_pitch_N|>`
# after `<|pitch|>` (128 when missing), the same for velocity, the text after `<|instrument|>` and after
# `<|sonic|>` up to the next `<`. Then: instrument and velocity accuracy (exact), pitch top-1 accuracy,
# **chroma** accuracy (pitch class, octave ignored), and the qualities' macro mAP. One answer, parsed:

# %%
answer = "<|pitch|><|midi_pitch_64|><|velocity|><|midi_velocity_100|><|instrument|>keyboard<|sonic|>bright, fast_decay"
metrics.parse_note(answer)

# %% [markdown]
# **The chroma quirk.** The official code one-hot encodes all pitches seen (references and outputs) with a
# `MultiLabelBinarizer` and compares *column indices* modulo 12, which equals the pitch class only when
# those pitches form one unbroken range. Two notes, one answered an octave too high:

# %%
quirk = metrics.note_metrics(["<|pitch|><|midi_pitch_72|>", "<|pitch|><|midi_pitch_62|>"],
                             [{"pitch": 60, "velocity": 100, "instrument": "keyboard", "qualities": []},
                              {"pitch": 62, "velocity": 100, "instrument": "keyboard", "qualities": []}])
pd.DataFrame([{"metric": m.name, "recipe": m.recipe, "value": m.value} for m in quirk if "pitch" in m.name])

# %% [markdown]
# The octave error keeps its pitch class (72 mod 12 = 60 mod 12), so chroma accuracy should be 1 (the
# standard recipe); read the official row above for what the column-index computation says instead.
# The paper's numbers beside the previous best:

# %%
paper_table(task.name)

# %% [markdown]
# ## 4 · A run through the evaluation runner
# The replica holds notes of nano's held-out split, rendered by FluidSynth from the General MIDI
# soundfont, in NSynth's layout (`examples.json` with every field, one wav a note).

# %%
wt = walkthrough(task.name, model=MODEL, device=DEVICE, dtype=DTYPE, data=DATA, limit=LIMIT)
result = wt.result
print(wt)
wt.metrics.round(3)

# %%
records = wt.records
records["pitch error"] = records["score.pitch"] - records["reference.pitch"]   # semitones, signed
records[["id", "reference.pitch", "score.pitch", "pitch error", "reference.velocity", "reference.instrument_family_str",
         "output"]]

# %% [markdown]
# How far the pitches land, in semitones (output − reference; a missing pitch is left out and counted in
# the title). Errors of ±12 are octave errors, which chroma accuracy forgives. Listen to the first two
# notes beside the figure.

# %%
display(save_notebook_figure(plot_histogram(records["pitch error"], bins=[b - 0.5 for b in range(-13, 15)],
                                            xlabel="pitch error (semitones)",
                                            marks={"octave below": -12, "octave above": 12},
                                            title=f"{wt.name}: pitch error per note"), "pitch_error_histogram"))
for record in result.records[:2]:
    print(f"{record['id']}: {record['output']}")
    display(Audio(wb.load_audio(record["audio"]), rate=16000))

# %% [markdown]
# ## 5 · A tag probe: swap the instruction and the audio language
# Does the tag answer format follow `<|note_analysis|>` (against `<|music_description|>`, a caption, an
# event label), and does `<|en|>` in place of `<|unknown|>` matter?

# %%
wt.probe(prompt, wt.example()["audio"],
         swap_variants(prompt, slot="instructions", values=["music_description", "caption_clotho", "event"])
         + swap_variants(prompt, slot="audio_lang", values=["en"]))

# %% [markdown]
# ## 6 · What nano can and cannot do
# nano's notes are General MIDI soundfont notes of the 11 NSynth families at five velocities, with the
# qualities it can measure on them. Its encoder keeps only the first two Whisper blocks, because deeper
# blocks lose the pitch it needs; even so, pitch within a semitone is easier for it than the exact pitch,
# and a few notes of a replica say little about either. A pitch off by a semitone is still a failure
# under every recipe. A qualities mAP over a few notes, most of which have no quality at all, is no
# number to set beside the paper's. Real NSynth notes come from about a thousand instruments it has
# never heard. This run:

# %%
errors = records["pitch error"].dropna()
print(f"{len(errors)} of {len(records)} answers name a pitch: {(errors == 0).mean():.2f} exact, "
      f"{(errors.abs() <= 1).mean():.2f} within ±1 semitone; instrument ACC {result.metric('instrument_ACC').value:.2f}, "
      f"velocity ACC {result.metric('velocity_ACC').value:.2f} (paper: instrument {task.paper['instrument_ACC']}, "
      f"qualities mAP {task.paper['qualities_mAP']}); "
      f"{int((records['reference.qualities_str'].map(len) > 0).sum())} of the notes have a quality")

# %% [markdown]
# ## 7 · Real model only
# With a real checkpoint, analyse a real recording: the first 4 s of the piano solo in `../shared/audio`
# (an NSynth note is 4 s). Skipped on nano.

# %%
if wt.real and os.path.isfile(REAL_CLIP):
    print(wt.generate(prompt, wb.load_audio(REAL_CLIP, on_long="truncate")[:4 * 16000]))
else:
    print("skipped: needs a real Qwen-Audio checkpoint (WORKBENCH_MODEL) and ../shared/audio")

# %% [markdown]
# ## Exercise
# Compute the *standard* chroma accuracy (`pitch % 12`) of this run yourself from the records, and count
# the octave errors (a non-zero pitch error that is a multiple of 12). Compare with the scorer's
# `pitch_chroma_ACC` in both recipes.

# %%
# Solution
print("chroma (pitch % 12):", round(float(((records["score.pitch"] % 12) == (records["reference.pitch"] % 12)).mean()), 3),
      "| octave errors:", int(((errors != 0) & (errors % 12 == 0)).sum()),
      "| scorer:", {m.recipe: round(m.value, 3) for m in result.metrics if m.name == "pitch_chroma_ACC"})
