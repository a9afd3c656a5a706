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
# # 12 · AAC: audio captioning on Clotho
#
# **Learning objectives.** After this notebook you can
# 1. read the analysis-side prompt (`<|startofanalysis|>`, an *unknown* audio language, a Clotho style
#    instruction);
# 2. say what the coco-caption metrics the paper reports (CIDEr, SPICE, SPIDEr) measure and what they
#    need to run;
# 3. explain why a caption metric rewards sounding like the references, and show it with a caption
#    that ignores the audio;
# 4. probe whether the style instruction changes a caption.
#
# **Run time**: about 1 minute on 2 CPU cores with nano (several seconds of it are the Java scorers
# starting). Configuration from the environment: `WORKBENCH_MODEL`, `WORKBENCH_DEVICE`,
# `WORKBENCH_DTYPE`, `WORKBENCH_DATA` (a folder holding `clotho/` as distributed:
# `clotho_captions_evaluation.csv` beside `evaluation/`); without it, a native-layout replica is
# written to a temporary folder. Cells marked **real model only** skip on nano.

# %%
# %matplotlib inline
import os
import re

import pandas as pd
from IPython.display import Audio, display

import workbench as wb
from workbench.evaluation import metrics
from workbench.evaluation.walkthrough import official_prompt, paper_table, prompt_table, walkthrough
from workbench.figures.style import save_notebook_figure
from workbench.figures.tasks import plot_captions
from workbench.tags import swap_variants

wb.figures.use_style()
pd.set_option("display.max_colwidth", 110)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model
DATA = os.environ.get("WORKBENCH_DATA")                 # a folder with clotho/ as distributed; None: replicas
LIMIT = int(os.environ.get("WORKBENCH_LIMIT", "6"))     # clips
REAL_CLIP = "../../shared/audio/glass-breaking-151256.mp3"

# %% [markdown]
# ## 1 · The task
# Automated audio captioning describes a recording in one sentence: which sources sound, what they do,
# in what order. It is hard because sounds overlap and are ambiguous (rain or frying?), because there
# is no single right answer (Clotho gives five human captions per 15–30 s clip, and they disagree), and
# because the metrics can only compare words with words.
#
# ## 2 · The official prompt, tag by tag

# %%
task = wb.get_task("clotho")
prompt = official_prompt(task)
print("<audio>FILE</audio>" + prompt.render())
prompt_table(prompt, {
    "start": "an analysis task (a description of the audio, not its words)",
    "audio_lang": "unknown: there may be no speech at all",
    "task": "caption",
    "text_lang": "write the caption in English",
    "timestamps": "no time tags",
    "instructions": "in the style of Clotho's captions (AudioCaps has its own tag)"})

# %% [markdown]
# Decoding: greedy, at most `max_new_tokens` new tokens (a caption is short), tags kept.

# %%
print("max_new_tokens:", task.max_new_tokens)

# %% [markdown]
# ## 3 · The official scoring
# `evaluate_caption.py` runs the coco-caption toolkit: the Stanford PTB tokenizer (Java: lowercases,
# drops punctuation), then BLEU-1…4, METEOR (Java), ROUGE-L, CIDEr, and SPICE (Java + Stanford
# CoreNLP); SPIDEr = (CIDEr + SPICE) / 2. **CIDEr** weights each n-gram by TF-IDF over the whole test
# set, so words that every caption uses ("a", "sound") count little and specific ones ("siren",
# "twice") much, then compares with the clip's references. SPICE parses captions into scene graphs
# (objects, attributes, relations). Here is what the tokenizer does to a caption:

# %%
caption = "A dog barks three times, and then a bell rings twice while a siren wails."
print("Java:", metrics.java_unavailable() or "available")
if metrics.java_unavailable() is None:
    print(metrics.ptb_tokenize([[caption]])[0])
print("SPICE:", metrics.spice_unavailable() or "available")

# %% [markdown]
# Without the CoreNLP jars SPICE (and so SPIDEr) is reported as unavailable, never as 0.
# The paper's numbers beside the previous best:

# %%
paper_table(task.name)

# %% [markdown]
# ## 4 · A run through the evaluation runner
# The replica holds clips of nano's held-out split in Clotho's layout (file names with spaces, one CSV
# with five captions a clip). The first caption is the corpus caption; the other four are written
# from the same events by templates, because the synthetic corpus has one caption a clip.

# %%
wt = walkthrough(task.name, model=MODEL, device=DEVICE, dtype=DTYPE, data=DATA, limit=LIMIT)
result = wt.result
print(wt)
wt.metrics.round(3)

# %% [markdown]
# Every clip: the generated caption, its references (drawn: the first two), and its sentence BLEU
# (sacrebleu against all five references, no Java needed: the per-clip number the records keep).
# Listen to the first two clips beside the figure.

# %%
records = wt.records
display(save_notebook_figure(plot_captions(list(records["output"]), list(records["reference"]),
                                           list(records["score.sentence_bleu"]), names=list(records["id"]),
                                           title=f"{wt.name}: captions and references"), "captions_vs_references"))
for record in result.records[:2]:
    print(f"{record['id']}: {record['output']}")
    display(Audio(wb.load_audio(record["audio"]), rate=16000))

# %% [markdown]
# ## 5 · A tag probe: swap the style instruction and the task
# `<|caption_clotho|>` and `<|caption_audiocaps|>` ask for the two datasets' styles (AudioCaps
# captions are shorter); `<|caption_plain|>` asks for neither. Does nano care?

# %%
wt.probe(prompt, wt.example()["audio"], swap_variants(prompt, slot="instructions",
                                                      values=["caption_audiocaps", "caption_plain"])
         + swap_variants(prompt, slot="task", values=["keyword", "transcribe"]))

# %% [markdown]
# ## 6 · What nano can and cannot do
# nano has heard a dozen procedural sound events (bells, barks, beeps, sirens, water, engines…) in
# mixtures, each captioned by one template. It names events of that world (not always the ones in the
# clip) and often gets the counts ("twice", "three times") or the order wrong: those are failures, and
# the count below says how many. Its CIDEr on the replica must **not** be set beside the paper's: CIDEr
# rewards sharing n-grams with the references, and these references come from the very templates nano
# was trained on, so a mediocre caption scores high. Real Clotho clips (rain on a tin roof, a crowd in
# a station) are outside its world altogether. The numbers of this run:

# %%
counts = re.compile(r"\b(once|twice|three times|four times)\b")
right = sum(counts.findall(o) == counts.findall(r["reference"][0]) for o, r in zip(result.outputs, result.records))
cider = result.metric("CIDEr").value
print(f"CIDEr {cider if cider is None else round(cider, 3)} on {'the replica' if wt.on_replicas else 'the data'} "
      f"(paper {task.paper['CIDEr']} on Clotho); counts as in the corpus caption in {right} of "
      f"{len(result.outputs)} captions")

# %% [markdown]
# ## 7 · Real model only
# With a real checkpoint, caption a real recording (the glass-breaking clip of `../shared/audio`) in
# both dataset styles. Skipped on nano.

# %%
if wt.real and os.path.isfile(REAL_CLIP):
    for style in ("caption_clotho", "caption_audiocaps"):
        print(style, "→", wt.generate(wb.preset("clotho", instructions=(style,)), REAL_CLIP))
else:
    print("skipped: needs a real Qwen-Audio checkpoint (WORKBENCH_MODEL) and ../shared/audio")

# %% [markdown]
# ## Exercise
# A caption that ignores the audio can still score. Give every clip the same caption, "A dog barks.",
# and compare its sentence BLEU per clip with the model's (`metrics.caption_item`; no Java needed).
# How close does it come, and what does a score above zero for a caption that ignores the audio say
# about sentence BLEU (its smoothing, and the words every caption shares)?

# %%
# Solution
pd.DataFrame([{"clip": r["id"], wt.name: r["score"]["sentence_bleu"],
               "'A dog barks.'": metrics.caption_item("A dog barks.", r["reference"])["sentence_bleu"]}
              for r in result.records]).round(1)
