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
# # 15 · SER: speech emotion recognition on MELD
#
# **Learning objectives.** After this notebook you can
# 1. read the emotion prompt (which names the speech's language, unlike the scene prompt) and say why
#    four new tokens are enough;
# 2. put an accuracy in perspective with a majority-class baseline and weighted F1;
# 3. explain how batched evaluation once destroyed this benchmark's score, and how the runner guards
#    against it;
# 4. probe how the instruction tag switches between label sets on the same speech.
#
# **Run time**: about 1 minute on 2 CPU cores with nano. Configuration from the environment:
# `WORKBENCH_MODEL`, `WORKBENCH_DEVICE`, `WORKBENCH_DTYPE`, `WORKBENCH_DATA` (a folder holding
# `MELD.Raw/` as distributed: `test_sent_emo.csv` and the mp4 clips); without it, a native-layout
# replica is written to a temporary folder. Cells marked **real model only** skip on nano.

# %%
# %matplotlib inline
import os

import pandas as pd
from IPython.display import Audio, display
from sklearn.metrics import f1_score

import workbench as wb
from workbench.evaluation import metrics
from workbench.evaluation.walkthrough import official_prompt, paper_table, prompt_table, walkthrough
from workbench.figures.style import save_notebook_figure
from workbench.figures.tasks import plot_confusion
from workbench.tags import swap_variants

wb.figures.use_style()
pd.set_option("display.max_colwidth", 100)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model
DATA = os.environ.get("WORKBENCH_DATA")                 # a folder with MELD.Raw/ as distributed; None: replica
LIMIT = int(os.environ.get("WORKBENCH_LIMIT", "6"))     # utterances
MELD_EMOTIONS = ["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"]   # MELD's seven labels

# %% [markdown]
# ## 1 · The task
# Which emotion does the speaker express? MELD cuts utterances out of the TV series *Friends*: short,
# overlapped by laughter and music, and labelled from the dialogue's context as much as from the voice.
# The same words can be angry or joking, most utterances are neutral, and some classes (fear, disgust)
# are rare, so accuracy alone can flatter a model that always says "neutral".
#
# ## 2 · The official prompt, tag by tag

# %%
task = wb.get_task("meld")
prompt = official_prompt(task)
print("<audio>FILE</audio>" + prompt.render())
prompt_table(prompt, {
    "start": "an analysis task", "audio_lang": "English speech (the scene prompt says <|unknown|>)",
    "task": "keyword: answer with a label", "text_lang": "the label in English",
    "timestamps": "no time tags", "instructions": "which label set: emotions"})

# %% [markdown]
# Decoding: greedy, and at most `max_new_tokens` new tokens (`evaluate_emotion.py`): an emotion label is
# one or two tokens, and a model that starts a sentence is cut off rather than given room to ramble
# (section 4 prints how many tokens each of MELD's labels takes in the model's tokenizer).

# %%
print("max_new_tokens:", task.max_new_tokens)

# %% [markdown]
# ## 3 · The official scoring
# Exact string match, `accuracy_score(references, outputs)`, as for scenes. The paper's numbers:

# %%
paper_table(task.name)

# %% [markdown]
# **The batching trap.** The official batched scripts padded prompts on the left and lost almost all of
# MELD's accuracy that way (0.551 → 0.067 in QwenLM/Qwen-Audio#43): a label of a few tokens is exactly
# what a shifted position breaks first. `evaluate` therefore compares its first batch with one-at-a-time
# generation and stops on any difference (on for real checkpoints; nano's batches are checked in the
# test suite, and section 7 repeats the check by hand).
#
# ## 4 · A run through the evaluation runner
# The replica's items are nano's held-out emotion proxies (the wav muxed into an mp4, as MELD ships
# video), in MELD's CSV layout.

# %%
wt = walkthrough(task.name, model=MODEL, device=DEVICE, dtype=DTYPE, data=DATA, limit=LIMIT)
result = wt.result
print(wt)
print("tokens per label:", {label: len(wt.model.tokenizer.encode(label)) for label in MELD_EMOTIONS})
wt.metrics.round(3)

# %%
records = wt.records
records[["id", "reference", "output", "score.correct", "n_tokens", "stopped"]]

# %% [markdown]
# The confusion matrix over all seven of MELD's labels: rows the data does not hold stay empty, and
# columns the model never says stay zero. Listen to the first two utterances beside it.

# %%
references = [r["reference"] for r in result.records]
labels = MELD_EMOTIONS + sorted(set(references) - set(MELD_EMOTIONS))
display(save_notebook_figure(plot_confusion(references, [metrics.normalize_label(o) for o in result.outputs],
                                            labels=labels,
                                            title=f"MELD: {wt.name}, official ACC {result.metric('ACC').value:.2f}"),
                             "confusion_matrix"))
for record in result.records[:2]:
    print(f"{record['id']}: reference {record['reference']!r}, output {record['output']!r}")
    display(Audio(wb.load_audio(record["audio"]), rate=16000))

# %% [markdown]
# ## 5 · A tag probe: other label sets on the same speech
# Swap the output instruction to the vocal-sound and scene label sets, and the audio language to
# `<|unknown|>`.

# %%
wt.probe(prompt, wt.example()["audio"],
         swap_variants(prompt, slot="instructions", values=["vocal_classification", "scene"])
         + swap_variants(prompt, slot="audio_lang", values=["unknown"]))

# %% [markdown]
# ## 6 · What nano can and cannot do
# nano's "emotions" are proxies made with prosody alone: joy is high and fast, sadness low, slow and
# quiet, anger fast and loud, neutral in between (`workbench/synth/README.md`). It knows four of MELD's
# seven labels and can never say surprise, fear or disgust. Its accuracy on the replica says whether it
# learned those prosody recipes, not whether it hears emotion in *Friends*; an utterance it labels
# wrongly is a failure even here. Against the majority-class baseline of this run:

# %%
majority = records["reference"].mode()[0]
print(f"official ACC {result.metric('ACC').value:.2f} (paper {task.paper['ACC']}); always answering "
      f"{majority!r}: {metrics.label_accuracy([majority] * len(records), list(records['reference']))[0].value:.2f}")

# %% [markdown]
# ## 7 · Real model only
# With a real checkpoint, re-run the evaluation with `batch_size=1` and compare: the two accuracies must
# be equal (the trap above). Skipped on nano.

# %%
if wt.real:
    alone = wb.evaluate(wt.model, task, wt.data / "MELD.Raw", result.out.parent / "batch1", limit=LIMIT,
                        progress=False, batch_size=1)
    print("batched:", result.metric("ACC").value, " one at a time:", alone.metric("ACC").value)
else:
    print("skipped: needs a real Qwen-Audio checkpoint (WORKBENCH_MODEL)")

# %% [markdown]
# ## Exercise
# MELD reports *weighted F1* beside accuracy, because the classes are imbalanced. Compute the weighted
# F1 of this run with `sklearn.metrics.f1_score` (on `normalize_label` forms) and compare it with the
# accuracy.

# %%
# Solution
print(round(f1_score(references, [metrics.normalize_label(o) for o in result.outputs], average="weighted",
                     zero_division=0), 3), "weighted F1 vs", round(result.metric("ACC").value, 3), "accuracy")
