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
# **You will learn** the emotion prompt (which names the speech's language, unlike the scene prompt),
# why four new tokens are enough, how a majority-class baseline puts an accuracy in perspective, why
# batched evaluation once destroyed this benchmark's score, and how the instruction tag switches
# between label sets on the same speech.
#
# **Runs** in about 20 s on one CPU core with nano. Configuration from the environment:
# `WORKBENCH_MODEL`, `WORKBENCH_DEVICE`, `WORKBENCH_DTYPE`, `WORKBENCH_DATA` (a folder holding
# `MELD.Raw/` as distributed: `test_sent_emo.csv` and the mp4 clips); without it, a native-layout
# replica is written to a temporary folder.

# %%
# %matplotlib inline
import os
import tempfile
from pathlib import Path

import pandas as pd
from IPython.display import Audio, display
from sklearn.metrics import f1_score

import workbench as wb
from workbench.evaluation import metrics
from workbench.evaluation.replicas import build_replicas
from workbench.evaluation.runner import evaluate
from workbench.evaluation.tasks import get_task
from workbench.figures.tasks import plot_confusion
from workbench.tags import swap_variants

wb.figures.use_style()
pd.set_option("display.max_colwidth", 100)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model
DATA = os.environ.get("WORKBENCH_DATA")                 # a folder with the datasets as distributed; None: replicas
LIMIT = int(os.environ.get("WORKBENCH_LIMIT", "6"))     # utterances
FOLDER = "MELD.Raw"                                     # the dataset's folder in DATA
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
task = get_task("meld")
prompt = wb.preset(task.preset, **task.preset_fields)
print("<audio>FILE</audio>" + prompt.render())
meaning = {"start": "an analysis task", "audio_lang": "English speech (the scene prompt says <|unknown|>)",
           "task": "keyword: answer with a label", "text_lang": "the label in English",
           "timestamps": "no time tags", "instructions": "which label set: emotions"}
pd.DataFrame([{"slot": slot, "tag": text, "what it says": meaning[slot]} for slot, text in prompt.slots()])

# %% [markdown]
# Decoding: greedy, and at most **4** new tokens (`evaluate_emotion.py`): an emotion label is one or two
# tokens, and a model that starts a sentence is cut off rather than given room to ramble (the run below
# prints how many tokens each of MELD's labels takes in this model's tokenizer).

# %%
print("max_new_tokens:", task.max_new_tokens)

# %% [markdown]
# ## 3 · The official scoring
# Exact string match, `accuracy_score(references, outputs)`, as for scenes. The paper's numbers:

# %%
pd.DataFrame([{"Qwen-Audio ACC": task.paper["ACC"], "previous best": task.previous_best["ACC"][0],
               "by": task.previous_best["ACC"][1]}], index=[task.name])

# %% [markdown]
# **The batching trap.** The official batched scripts padded prompts on the left and lost almost all of
# MELD's accuracy that way (0.551 → 0.067 in QwenLM/Qwen-Audio#43): a label of a few tokens is exactly
# what a shifted position breaks first. `evaluate` therefore compares its first batch with one-at-a-time
# generation and stops on any difference (on for real checkpoints below; nano's batches are checked in
# the test suite).
#
# ## 4 · A run: `evaluate` on the data
# The replica's items are nano's held-out emotion proxies (the wav muxed into an mp4, as MELD ships
# video), in MELD's CSV layout.

# %%
if DATA:
    data = Path(DATA)
else:
    data = Path(tempfile.mkdtemp(prefix="wb_replicas_"))
    build_replicas(data, items_per_dataset=6)
runs = Path(tempfile.mkdtemp(prefix="wb_runs_"))
model = wb.load(MODEL, device=DEVICE, dtype=DTYPE)
print({label: len(model.tokenizer.encode(label)) for label in MELD_EMOTIONS})   # tokens per label
result = evaluate(model, task, data / FOLDER, runs / task.name, limit=LIMIT, progress=False,
                  check_batch=MODEL != "nano")
result.to_pandas().drop(columns="note").round(3)

# %%
records = result.records_to_pandas()
records[["id", "reference", "output", "score.correct", "n_tokens", "stopped"]]

# %% [markdown]
# The confusion matrix over all seven of MELD's labels: rows nano never sees in its corpus stay empty,
# and columns it cannot say stay zero.

# %%
references = [r["reference"] for r in result.records]
labels = MELD_EMOTIONS + sorted(set(references) - set(MELD_EMOTIONS))
plot_confusion(references, [metrics.normalize_label(o) for o in result.outputs], labels=labels,
               title=f"MELD: {Path(MODEL).name}, official ACC {result.metric('ACC').value:.2f}")

# %%
for record in result.records[:2]:
    print(f"{record['id']}: reference {record['reference']!r}, output {record['output']!r}")
    display(Audio(wb.load_audio(record["audio"]), rate=16000))

# %% [markdown]
# ## 5 · A tag probe: other label sets on the same speech
# Swap the output instruction to the vocal-sound and scene label sets, and the audio language to
# `<|unknown|>`.

# %%
audio = result.records[0]["audio"]
variants = (swap_variants(prompt, slot="instructions", values=["vocal_classification", "scene"])
            + swap_variants(prompt, slot="audio_lang", values=["unknown"]))
base = model.generate(prompt, audio, max_new_tokens=task.max_new_tokens).text
pd.DataFrame([{"variant": "official prompt", "output": base}]
             + [{"variant": v.label, "output": model.generate(v.prompt, audio, max_new_tokens=task.max_new_tokens).text}
                for v in variants]).assign(moved=lambda frame: frame["output"] != base)

# %% [markdown]
# ## 6 · What nano can and cannot do
# nano's "emotions" are proxies made with prosody alone: joy is high and fast, sadness low, slow and
# quiet, anger fast and loud, neutral in between (`workbench/synth/README.md`). It knows four of MELD's
# seven labels and can never say surprise, fear or disgust. Its accuracy on the replica says whether it
# learned those prosody recipes, not whether it hears emotion in *Friends*. Against the majority-class
# baseline of this run:

# %%
majority = records["reference"].mode()[0]
print(f"official ACC {result.metric('ACC').value:.2f} (paper {task.paper['ACC']}); always answering "
      f"{majority!r}: {metrics.label_accuracy([majority] * len(records), list(records['reference']))[0].value:.2f}")

# %% [markdown]
# ## 7 · Real model only
# With a real checkpoint, re-run the evaluation with `batch_size=1` and compare: the two accuracies must
# be equal (the trap above). Skipped on nano.

# %%
if MODEL != "nano":
    alone = evaluate(model, task, data / FOLDER, runs / "batch1", limit=LIMIT, progress=False, batch_size=1)
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
