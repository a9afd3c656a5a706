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
# # 10 · ASR: LibriSpeech and Aishell
#
# **Learning objectives.** After this notebook you can
# 1. read the official ASR prompt tag by tag and say what each of its six tags asks for;
# 2. compute the paper's WER by hand, and explain why a harness with Whisper's normaliser reports
#    another number for the same output;
# 3. run a benchmark end to end with the evaluation runner and read a model's errors against
#    utterance length;
# 4. probe whether a model follows its task and language tags.
#
# **Run time**: about 1 minute on 2 CPU cores with the embedded nano model (most of it writing the
# replicas and loading the kernel). The configuration cell below reads the environment, so the same
# notebook runs a real checkpoint on a GPU: `WORKBENCH_MODEL=/models/Qwen-Audio WORKBENCH_DEVICE=cuda
# WORKBENCH_DTYPE=bfloat16 WORKBENCH_DATA=/data` (a folder holding `LibriSpeech/` and `data_aishell/` as
# distributed). Without `WORKBENCH_DATA` the notebook writes tiny replicas of both datasets, in their
# native layout, into a temporary folder. Cells marked **real model only** skip on nano.

# %%
# %matplotlib inline
import os

import pandas as pd
from IPython.display import Audio, display
from matplotlib.figure import Figure

import workbench as wb
from workbench.evaluation import metrics
from workbench.evaluation.walkthrough import official_prompt, paper_table, prompt_table, walkthrough
from workbench.figures.style import save_notebook_figure
from workbench.figures.tasks import plot_errors_by_length
from workbench.tags import swap_variants

wb.figures.use_style()
pd.set_option("display.max_colwidth", 110)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model
DATA = os.environ.get("WORKBENCH_DATA")                 # a folder with the datasets as distributed; None: replicas
LIMIT = int(os.environ.get("WORKBENCH_LIMIT", "6"))     # items per dataset
REAL_CLIPS = "../../shared/audio"                        # real clips (LibriSpeech 1272-128104-0000…), when present
TASKS = ["librispeech-dev-clean", "aishell1-test"]

# %% [markdown]
# ## 1 · The task
# Automatic speech recognition turns speech into its words. It is hard because the same words never
# sound the same twice (speakers, accents, speed, microphones, noise, reverberation), because words
# run together with no pause between them, and because the written form is a convention: is it
# "Mr." or "mister", "twenty" or "20", with or without the comma? The last point decides a good part
# of every WER comparison (section 3).
#
# **LibriSpeech**: read English audiobooks (dev/test × clean/other, ~5 h each). **Aishell-1**:
# read Mandarin, scored per character, because written Chinese has no spaces between words.
#
# ## 2 · The official prompt, tag by tag
# The official evaluation (`eval_audio/evaluate_asr.py`) writes the audio, then six tags:

# %%
task = wb.get_task(TASKS[0])
prompt = official_prompt(task)
print("<audio>FILE</audio>" + prompt.render())
prompt_table(prompt, {
    "start": "a transcription task: the output is the speech's own words (analysis tasks say <|startofanalysis|>)",
    "audio_lang": "the language spoken in the audio",
    "task": "transcribe (not translate, caption or keyword)",
    "text_lang": "the language of the output text: the same as the audio's for ASR",
    "timestamps": "no time tags between the words",
    "instructions": "without inverse text normalisation: spoken form, lowercase, no punctuation"})

# %% [markdown]
# Aishell's prompt differs only in its two language tags:

# %%
zh_prompt = official_prompt(TASKS[1])
pd.DataFrame({"LibriSpeech": dict(prompt.slots()), "Aishell-1": dict(zh_prompt.slots())})

# %% [markdown]
# **Decoding**: greedy, stop at `<|endoftext|>`, at most `task.max_new_tokens` new tokens (the value
# of the official script), decoded with the tags kept, then `.strip()`.

# %%
print({name: wb.get_task(name).max_new_tokens for name in TASKS})

# %% [markdown]
# ## 3 · The official scoring, worked through
# `evaluate_asr.py` removes tags, collapses spaces, removes the space before `!,.?;:` and lowercases,
# but **keeps punctuation glued to its word**; WER = Σ edit distance / Σ reference words over the
# corpus (characters for Mandarin). Harnesses that use Whisper's `EnglishTextNormalizer` also drop
# punctuation and spell "mr" as "mister". Here is the real Qwen-Audio's output on LibriSpeech
# dev-clean 1272-128104-0000 (reported in the official README), and two ways the same words could
# have been written:

# %%
reference = "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES AND WE ARE GLAD TO WELCOME HIS GOSPEL"
readme = "mister quilting is the apostle of the middle classes and we are glad to welcome his gospel"
written = {"Qwen-Audio (README)": readme,
           "written with ITN": "Mr. Quilting is the apostle of the middle classes, and we are glad to welcome his gospel.",
           "with a tag left in": "<|en|>" + readme}
pd.DataFrame([{"output": name,
               "official tokens (first 9)": " ".join(metrics.official_tokens(text, "en")[:9]),
               "Whisper-normalised": metrics.standard_clean(text, "en")[:60],
               "official WER %": metrics.asr_item(text, reference, "en")["wer"],
               "standard WER %": metrics.asr_item(text, reference, "en")["wer_standard"]}
              for name, text in written.items()]).round(1)

# %% [markdown]
# Read the first row: one substituted word ("quilting") in a 17-word reference. Written with inverse
# text normalisation the same words cost more errors under the official recipe ("mr." ≠ "mister",
# "classes," ≠ "classes") and none more under the standard one: that is why the official prompt asks
# for `<|wo_itn|>`. Tags are removed by both recipes. For Mandarin the unit is the character, and a
# full stop is a character:

# %%
pd.DataFrame([{"output": text, "official tokens": metrics.official_tokens(text, "zh"),
               "official CER %": metrics.asr_item(text, "你没事吧", "zh")["wer"],
               "standard CER %": metrics.asr_item(text, "你没事吧", "zh")["wer_standard"]}
              for text in ("你没事吧", "你 没事 吧。", "你没事")]).round(1)

# %% [markdown]
# The paper's numbers beside the best earlier system, for every ASR split in the registry:

# %%
paper_table(*[name for name, t in wb.TASKS.items() if t.kind == "asr"])

# %% [markdown]
# ## 4 · A run through the evaluation runner
# `walkthrough` finds the data (without `WORKBENCH_DATA` it writes both datasets in their native
# layout: a few sentences of nano's held-out test split, and one real recording each, from
# `../shared/audio` when that folder is there, else the package's espeak-ng demo sentence), loads the
# model and calls `evaluate` on each task: the dataset's reader, the official tags for every item,
# greedy decoding in batches, and both scoring recipes.

# %%
wt = walkthrough(TASKS, model=MODEL, device=DEVICE, dtype=DTYPE, data=DATA, limit=LIMIT, real_clips=REAL_CLIPS)
print(wt)
wt.metrics.round(2)

# %% [markdown]
# Every item, with where it came from:

# %%
records = wt.records
records[["task", "id", "origin", "reference", "output", "score.errors", "score.ref_len", "score.wer"]].round(1)

# %% [markdown]
# Errors against length, one point per utterance. Points near the floor are good transcripts; points
# above the dashed diagonal have more errors than the reference has words, which only insertions can
# do (an output much longer than the speech).

# %%
fig = Figure(figsize=(10, 3.8))
for ax, (name, frame) in zip(fig.subplots(1, 2), records.groupby("task", sort=False)):
    plot_errors_by_length(frame["score.ref_len"], frame["score.errors"], labels=list(frame["id"]), ax=ax,
                          unit="characters" if wb.get_task(name).language == "zh" else "words", title=name)
save_notebook_figure(fig, "errors_by_length")

# %% [markdown]
# Listen to the first English item and the first from nano's held-out split (on the replicas the first
# item is the real recording):

# %%
english = wt.results[TASKS[0]].records
for record in (english[0], wt.example(TASKS[0], synthetic=True)):
    print(f"{record['id']} ({wt.origins.get(record['id'], 'dataset')})\n  reference: {record['reference']}\n"
          f"  output:    {record['output'][:200]}")
    display(Audio(wb.load_audio(record["audio"]), rate=16000))

# %% [markdown]
# ## 5 · A tag probe: swap the task and the language tags
# The first English item inside nano's world (a held-out sentence of its grammar: on the real recording
# every output is wrong anyway), one slot changed at a time (`swap_variants`). Which changes move the
# output, and which does the model ignore?

# %%
item = wt.example(TASKS[0], synthetic=True)
wt.probe(prompt, item["audio"], swap_variants(prompt, slot="task")
         + swap_variants(prompt, slot="text_lang", values=["de", "fr", "zh"]))

# %% [markdown]
# The Mandarin prompt with its audio language swapped, on the first Mandarin item of nano's world:

# %%
zh_item = wt.example(TASKS[1], synthetic=True)
wt.probe(zh_prompt, zh_item["audio"], swap_variants(zh_prompt, slot="audio_lang", values=["en", "de"]))

# %% [markdown]
# ## 6 · What nano can and cannot do
# nano is a small Qwen-Audio (its size is printed in section 4) trained on a synthetic world:
# espeak-ng voices reading a grammar of about seventy words. On its own held-out sentences its errors
# are a word or two, a noun of the grammar in place of another; real speech is nothing like what it
# heard, and it answers with words and sentences of its grammar (or runs on until `max_new_tokens`:
# counted below). The numbers of this run, by where the items came from (on a real dataset every item
# is "dataset"):

# %%
rows = []
for name, frame in records.groupby("task", sort=False):
    for kind, part in frame.groupby(frame["origin"].str.split().str[0]):
        rows.append({"task": name, "items from": kind, "items": len(part),
                     "official WER %": metrics.official_wer(list(part["output"]), list(part["reference"]),
                                                            wb.get_task(name).language).value,
                     "cut at max_new_tokens": int((~part["stopped"]).sum()),
                     "paper WER %": wb.get_task(name).paper["WER"]})
pd.DataFrame(rows).round(1)

# %% [markdown]
# Compare these with the paper's numbers with care: a handful of synthetic sentences from nano's own
# grammar is not LibriSpeech. The replica checks the *pipeline* (layout, prompt, decoding, scoring)
# end to end; the model's numbers on it say only how well nano learned its own world. A WER far above
# 100 % on a real recording is a failure, not noise: the output is a sentence of nano's grammar
# instead of the speech.
#
# In the tag probe, read the `moved` column. nano learned each tag only in the combinations of its
# corpus: English speech met another text language only under `<|translate|>`, and never met
# `<|caption|>` or `<|keyword|>`. A swap into a combination it never saw either leaves the output
# where it was (the model goes by what the audio sounds like) or borrows a form learned elsewhere: a
# translation-like sentence with the `<|itn|>` full stop, a transcript in another language.

# %% [markdown]
# ## 7 · Real model only
# With a real Qwen-Audio checkpoint, the README's output on the real LibriSpeech clip should come back
# word for word. Skipped on nano.

# %%
clip = os.path.join(REAL_CLIPS, "1272-128104-0000.flac")
if wt.real and os.path.isfile(clip):
    print(wt.generate(prompt, clip))
    print(written["Qwen-Audio (README)"])
else:
    print("skipped: needs a real Qwen-Audio checkpoint (WORKBENCH_MODEL) and ../shared/audio")

# %% [markdown]
# ## Exercises
# **1.** The official recipe keeps punctuation. Take the outputs of the English run, end each with a
# full stop (what an ITN-style model would write) and score them with both recipes. What does one full
# stop per sentence cost in official WER, and in standard WER?

# %%
# Solution 1
references = [r["reference"] for r in english]
outputs = {"as generated": [r["output"] for r in english], "with a full stop": [r["output"] + "." for r in english]}
pd.DataFrame([{"outputs": kind, **{f"{m.recipe} WER %": m.value for m in metrics.asr_metrics(outs, references, "en")}}
              for kind, outs in outputs.items()]).round(1)

# %% [markdown]
# **2.** WER is a corpus number: Σ errors / Σ reference words, not the mean of the per-utterance WERs.
# Compute both from the English records. Which items pull them apart?

# %%
# Solution 2
en = records[records["task"] == TASKS[0]]
print(f"corpus WER {100 * en['score.errors'].sum() / en['score.ref_len'].sum():.1f} %, "
      f"mean of utterance WERs {en['score.wer'].mean():.1f} %")
en[["id", "score.ref_len", "score.errors", "score.wer"]].round(1)
