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
# # 13 · SRWT: speech recognition with word timestamps
#
# **Learning objectives.** After this notebook you can
# 1. say how Qwen-Audio writes time into its output (one time token every 10 ms from `<|0.00|>` to
#    `<|30.00|>`, around every word) and how the prompt forces the first one;
# 2. compute the paper's *average alignment shift* (AAS) by hand, knowing that it **sums** the start and
#    the end shift of each word;
# 3. read a model's word times against the spectrogram, and test whether its times ever run backwards.
#
# **Run time**: about 1 minute on 2 CPU cores with nano. Configuration from the environment:
# `WORKBENCH_MODEL`, `WORKBENCH_DEVICE`, `WORKBENCH_DTYPE`, `WORKBENCH_DATA` (a folder holding `srwt/`:
# wavs with word alignments as MFA TextGrids; the paper's industrial set is not public, so any data
# with word times stands in); without it, a replica of nano's held-out Mandarin items is written to a
# temporary folder. Cells marked **real model only** skip on nano.

# %%
# %matplotlib inline
import os
import re

import edit_distance
import numpy as np
import pandas as pd
from IPython.display import Audio, display

import workbench as wb
from workbench.evaluation import metrics
from workbench.evaluation.walkthrough import official_prompt, paper_table, prompt_table, walkthrough
from workbench.figures.style import save_notebook_figure
from workbench.figures.tasks import plot_histogram, plot_spans_on_mel, spans_table
from workbench.tags import swap_variants

wb.figures.use_style()
pd.set_option("display.max_colwidth", 120)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model
DATA = os.environ.get("WORKBENCH_DATA")                 # a folder with srwt/ (wav + TextGrid); None: replica
LIMIT = int(os.environ.get("WORKBENCH_LIMIT", "6"))     # utterances
REAL_CLIP = "../../shared/audio/1272-128104-0000.flac"
TIME = re.compile(r"<\|(\d+\.\d+)\|>")                  # a time token in an output

# %% [markdown]
# ## 1 · The task
# The model transcribes *and* says when each word (for Mandarin: each character) starts and ends. A
# forced aligner does the second half when it is given the transcript; here the model must recognise
# and time at once. Word boundaries in running speech are fuzzy (sounds blend into each other), the
# LLM sees the audio in 40 ms tokens while the time tags step by 10 ms, and every time is generated
# token by token, so nothing forces the times to increase.
#
# ## 2 · The official prompt, tag by tag

# %%
task = wb.get_task("srwt")
prompt = official_prompt(task)
print("<audio>FILE</audio>" + prompt.render())
prompt_table(prompt, {
    "start": "a transcription task", "audio_lang": "Mandarin speech", "task": "transcribe",
    "text_lang": "Mandarin text", "timestamps": "time tags around every word",
    "first_time": "the first time tag, written into the prompt: the answer continues after 0.00 s"})

# %% [markdown]
# The answer then reads `<|sil|><|0.35|>熊<|0.83|>在<|1.20|>…`: each word sits between the time tags
# on either side, and `<|sil|>` fills a silence. Decoding: greedy, at most `max_new_tokens` tokens.

# %%
print("max_new_tokens:", task.max_new_tokens)

# %% [markdown]
# ## 3 · The official scoring
# `evaluate_srwt.py` parses the time tags, aligns the output's words with the reference's by edit
# distance, and for every pair the alignment calls *equal* adds |Δstart| + |Δend|; AAS is that sum
# divided by the number of matched words, over the corpus. So AAS is the **sum** of the two boundary
# errors of a word, not their mean; a word whose start and end are both 25 ms late scores 50 ms. WER is
# scored as for ASR (per character for Mandarin). The paper against the best earlier system:

# %%
paper_table(task.name)

# %% [markdown]
# ## 4 · A run through the evaluation runner
# The replica holds Mandarin utterances of nano's held-out split, synthesised one character at a time,
# so their times are exact; the layout is a wav beside an MFA-style TextGrid.

# %%
wt = walkthrough(task.name, model=MODEL, device=DEVICE, dtype=DTYPE, data=DATA, limit=LIMIT)
result = wt.result
print(wt)
wt.metrics.round(1)

# %%
records = wt.records
records["reference text"] = ["".join(w[0] for w in r) for r in records["reference"]]
records[["id", "reference text", "output", "score.wer", "score.matched_words", "score.aas_ms"]].round(1)

# %% [markdown]
# **The scoring worked through on the first output.** `parse_timed_words` reads the words between the
# time tags (and returns None when there is no time tag at all, the official "pattern error"); the
# edit-distance alignment pairs them with the reference's:

# %%
first = wt.example()
reference_words = metrics.timed_words(first["reference"])
output_words = metrics.parse_timed_words(first["output"]) or []
print(first["output"])
opcodes = edit_distance.SequenceMatcher([w.word for w in reference_words], [w.word for w in output_words]).get_opcodes()
pd.DataFrame([{"alignment": op,   # an insert has no reference word, a delete no output word
               "reference": f"{reference_words[i].word} {reference_words[i].start:.2f}–{reference_words[i].end:.2f}"
               if i_end > i else "",
               "output": f"{output_words[j].word} {output_words[j].start:.2f}–{output_words[j].end:.2f}"
               if j_end > j else "",
               "shift (ms)": 1000 * (abs(reference_words[i].start - output_words[j].start)
                                     + abs(reference_words[i].end - output_words[j].end)) if op == "equal" else None}
              for op, i, i_end, j, j_end in opcodes]).round(0)

# %% [markdown]
# The same per-word shifts for every utterance; their mean is the corpus AAS the scorer reported.

# %%
parsed = [(metrics.timed_words(r["reference"]), metrics.parse_timed_words(r["output"])) for r in result.records]
shifts = [1000 * (abs(ref[i].start - out[j].start) + abs(ref[i].end - out[j].end))
          for ref, out in parsed if out is not None
          for op, i, _, j, _ in edit_distance.SequenceMatcher([w.word for w in ref], [w.word for w in out]).get_opcodes()
          if op == "equal"]
aas = result.metric("AAS_ms").value          # None when no word matched at all
print(f"{len(shifts)} matched words, mean shift {np.mean(shifts) if shifts else float('nan'):.1f} ms; "
      f"the scorer's AAS: {aas if aas is None else round(aas, 1)} ms")
save_notebook_figure(plot_histogram(
    shifts, bins=20, xlabel="|Δstart| + |Δend| of a matched word (ms)",
    marks={**({f"{wt.name}: AAS {aas:.0f} ms": aas} if aas is not None else {}),
           f"Qwen-Audio (paper) {task.paper['AAS_ms']} ms": task.paper["AAS_ms"],
           f"{task.previous_best['AAS_ms'][1]} {task.previous_best['AAS_ms'][0]} ms": task.previous_best["AAS_ms"][0]},
    title="timestamp shift per matched word"), "timestamp_shift_histogram")

# %% [markdown]
# **Words on the mel.** The first utterance: the reference characters and the model's, each as a box
# from its start to its end time; listen to it beside the figure. The figure font has no Chinese
# glyphs, so boxes are numbered; the table after it says which character each number is. A red hatched
# box ends before it starts.

# %%
audio = wb.load_audio(first["audio"])
rows = {"reference": [(w.word, w.start, w.end) for w in reference_words],
        wt.name: [(w.word, w.start, w.end) for w in output_words if w.word != "<|sil|>"]}
display(save_notebook_figure(plot_spans_on_mel(wb.log_mel(audio), rows, seconds=len(audio) / 16000,
                                               title=f"{first['id']}: reference and {wt.name} word times"),
                             "word_times_on_mel"))
display(Audio(audio, rate=16000))
spans_table(rows)

# %% [markdown]
# ## 5 · A tag probe: timestamps off, language swapped
# Same clip; the timestamp tag swapped (the prompt still ends in `<|0.00|>`), then the audio language,
# then both language tags set to English. Count the time tags of each answer and check whether its
# times ever go backwards.

# %%
probe = wt.probe(prompt, first["audio"], swap_variants(prompt, slot="timestamps", values=["notimestamps"])
                 + swap_variants(prompt, slot="audio_lang", values=["en"]))
both = wb.preset("srwt", lang="en")
probe = pd.concat([probe, pd.DataFrame([{"variant": "both languages: zh → en", "tags": both.render(),
                                         "output": wt.generate(both, first["audio"])}])], ignore_index=True)
times = [[float(t) for t in TIME.findall(text)] for text in probe["output"]]
probe.assign(moved=probe["output"] != probe["output"].iloc[0], output=probe["output"].str[:90],
             **{"time tags": [len(ts) for ts in times],
                "times never decrease": [all(b >= a for a, b in zip(ts, ts[1:])) for ts in times]})

# %% [markdown]
# ## 6 · What nano can and cannot do
# nano learned word times from a few hundred synthetic utterances whose times are exact. Look above for
# what it keeps: the *form* — time tags around characters, `<|sil|>` over silences — and the first
# words near the right time. It recognises the characters poorly (each unmatched character is left out
# of the AAS, so a low AAS over few matched words means little), and later times drift or even run
# backwards: a time that runs backwards is a failure of the output, whatever the AAS. The numbers of
# this run:

# %%
monotone = [all(b >= a for a, b in zip(ts, ts[1:])) for ts in ([float(t) for t in TIME.findall(o)] for o in result.outputs)]
print(f"WER {result.metric('WER').value:.1f} %, AAS {aas if aas is None else round(aas)} ms over {len(shifts)} "
      f"matched characters (paper: {task.paper['AAS_ms']} ms); times never decrease in {sum(monotone)} of "
      f"{len(monotone)} outputs")

# %% [markdown]
# ## 7 · Real model only
# With a real checkpoint, the same prompt in English on the real LibriSpeech clip: the words should
# come out with times close to a forced alignment. Skipped on nano.

# %%
if wt.real and os.path.isfile(REAL_CLIP):
    print(wt.generate(wb.preset("srwt", lang="en"), REAL_CLIP))
else:
    print("skipped: needs a real Qwen-Audio checkpoint (WORKBENCH_MODEL) and ../shared/audio")

# %% [markdown]
# ## Exercise
# Predict, then check: if every word of an answer came 30 ms late (start and end), what AAS would the
# official scorer give? Use the model's own first answer as the "output" and the same words 30 ms
# later as the "reference" (`metrics.aas` takes references as lists of `(word, start, end)`).

# %%
# Solution: 60 ms, because AAS adds the start shift and the end shift of each word.
late = [(w.word, w.start + 0.03, w.end + 0.03) for w in output_words]
print(f"{metrics.aas([first['output']], [late]).value:.1f} ms")
