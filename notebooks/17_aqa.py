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
# # 17 · AQA: audio question answering on Clotho-AQA
#
# **You will learn** the one prompt that carries free text between its tags (`<|question|>…<|answer|>`),
# how Clotho-AQA's one-row-per-annotator file shapes the official accuracy, why yes/no questions are
# reported apart from open ones, and how sensitive a model is to the wording of a question.
#
# **Runs** in about 20 s on one CPU core with nano. Configuration from the environment:
# `WORKBENCH_MODEL`, `WORKBENCH_DEVICE`, `WORKBENCH_DTYPE`, `WORKBENCH_DATA` (a folder holding
# `clothoaqa/` as distributed: `clotho_aqa_test.csv` beside `audio_files/`); without it, a native-layout
# replica is written to a temporary folder.

# %%
# %matplotlib inline
import os
import tempfile
from pathlib import Path

import pandas as pd
from IPython.display import Audio, display

import workbench as wb
from workbench.evaluation import metrics
from workbench.evaluation.readers import read_dataset
from workbench.evaluation.replicas import build_replicas
from workbench.evaluation.runner import evaluate
from workbench.evaluation.tasks import get_task
from workbench.figures.tasks import plot_bars
from workbench.tags import swap_variants

wb.figures.use_style()
pd.set_option("display.max_colwidth", 100)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model
DATA = os.environ.get("WORKBENCH_DATA")                 # a folder with the datasets as distributed; None: replicas
LIMIT = int(os.environ.get("WORKBENCH_LIMIT", "6"))     # questions
FOLDER = "clothoaqa"                                    # the dataset's folder in DATA

# %% [markdown]
# ## 1 · The task
# Given a clip and a question about it ("Is a bird singing?", "How many times does the bell ring?"),
# answer in a word. The model must hear the sources, keep their order and count them, and understand the
# question; Clotho-AQA's annotators often disagree (three answers per question, with a confidence each),
# so even a perfect listener cannot match every row.
#
# ## 2 · The official prompt, tag by tag
# The question is plain text inside the prompt; the tags around it say "answer this":

# %%
task = get_task("clotho-aqa")
prompt = wb.preset(task.preset, question="How many times does the bell ring?")
print("<audio>FILE</audio>" + prompt.render())
meaning = {"start": "an analysis task", "audio_lang": "English (the question's language)",
           "task": "<|question|>: the question text follows", "question": "the question, then <|answer|>: answer now"}
pd.DataFrame([{"slot": slot, "text": text, "what it says": meaning[slot]} for slot, text in prompt.slots()])

# %% [markdown]
# No text-language, timestamp or instruction tags. Decoding: greedy, at most **4** new tokens: the
# answer is a word (yes, no, a number, a source).

# %%
print("max_new_tokens:", task.max_new_tokens)

# %% [markdown]
# ## 3 · The official scoring
# The official eval file repeats a question once per annotator's answer, and `evaluate_aqa.py` scores
# `accuracy_score` over those **rows**: one output, compared with three answers. `ACC_yes_no` is the
# same over the rows whose answer is yes or no. The standard recipe makes one decision per question
# (right if the output matches any accepted answer). One question with disagreeing annotators:

# %%
example = metrics.aqa_metrics(["yes"], [["yes", "yes", "no"]])
pd.DataFrame([{"metric": m.name, "recipe": m.recipe, "value": m.value} for m in example]).round(3)

# %% [markdown]
# The paper's numbers beside the best earlier systems:

# %%
pd.DataFrame({"Qwen-Audio (paper)": task.paper, "previous best": {k: v for k, (v, _) in task.previous_best.items()},
              "by": {k: by for k, (_, by) in task.previous_best.items()}})

# %% [markdown]
# ## 4 · A run: `evaluate` on the data
# The replica holds questions about clips of nano's held-out split (a count, a yes/no presence question,
# which event comes first), three answer rows each, in Clotho-AQA's CSV layout. A question asked several
# times is generated once.

# %%
if DATA:
    data = Path(DATA)
else:
    data = Path(tempfile.mkdtemp(prefix="wb_replicas_"))
    build_replicas(data, items_per_dataset=6)
runs = Path(tempfile.mkdtemp(prefix="wb_runs_"))
model = wb.load(MODEL, device=DEVICE, dtype=DTYPE)
result = evaluate(model, task, data / FOLDER, runs / task.name, limit=LIMIT, progress=False,
                  check_batch=MODEL != "nano")
result.to_pandas().drop(columns="note").round(3)

# %%
items = read_dataset(task.dataset, data / FOLDER, **task.reader_kwargs)[:LIMIT]
records = result.records_to_pandas()
records["question"] = [item.question for item in items]
records[["id", "question", "reference", "output", "score.correct", "score.correct_standard", "score.yes_no"]]

# %% [markdown]
# Accuracy on yes/no questions and on open ones (a count, a source), beside the paper's (which reports
# all rows and the yes/no rows; a dash where there is no number):

# %%
groups = {"all": records, "yes/no": records[records["score.yes_no"]], "open": records[~records["score.yes_no"]]}
ours = {kind: {"nano, official": metrics.aqa_metrics(list(g["output"]), list(g["reference"]))[0].value,   # row ACC
               "nano, standard": metrics.aqa_metrics(list(g["output"]), list(g["reference"]))[2].value}   # per question
        for kind, g in groups.items()}
table = pd.DataFrame(ours).T
table["Qwen-Audio (paper)"] = [task.paper["ACC"], task.paper["ACC_yes_no"], None]
table["previous best"] = [task.previous_best["ACC"][0], task.previous_best["ACC_yes_no"][0], None]
print({kind: len(g) for kind, g in groups.items()}, "questions")
plot_bars(table, ylabel="accuracy", fmt="{:.2f}", title=f"Clotho-AQA: {Path(MODEL).name} on yes/no and open questions",
          colors={"nano, official": "C0", "nano, standard": "#9ecae1", "Qwen-Audio (paper)": "C1",
                  "previous best": "C7"})

# %%
for item, record in list(zip(items, result.records))[:2]:
    print(f"{item.question} → {record['output']!r} (accepted: {record['reference']})")
    display(Audio(wb.load_audio(record["audio"]), rate=16000))

# %% [markdown]
# ## 5 · A tag probe: another question, then another task
# The first clip: its own question, other questions, and the `<|question|>` task tag swapped for
# `<|caption|>` and `<|keyword|>` (the question text then goes, as those tasks take none).

# %%
item = items[0]
questions = [item.question, "Is a bell ringing?", "Is a dog barking?", "How many times does the dog bark?",
             "Which sound comes first?"]
rows = [{"prompt": q, "output": model.generate(wb.preset("clothoaqa", question=q), item.audio,
                                               max_new_tokens=task.max_new_tokens).text} for q in questions]
own = wb.preset("clothoaqa", question=item.question)
rows += [{"prompt": v.label, "output": model.generate(v.prompt, item.audio, max_new_tokens=30).text}
         for v in swap_variants(own, slot="task", values=["caption", "keyword"])]
pd.DataFrame(rows)

# %% [markdown]
# ## 6 · What nano can and cannot do
# nano's questions come from a few templates over its procedural sound events: counts, yes/no presence,
# "is the first beep higher than the last", which event comes first. Look at the probe above for the
# *form* of its answers (a count for "how many", yes or no for "is …?", an event for "which") and at
# the accuracies below for their *content*: counting events in a mixture is the hardest thing nano was
# asked to learn, and a handful of questions gives a very rough accuracy. A question outside its
# templates can only get an answer of a template's form. This run:

# %%
print({kind: {k: (None if v is None else round(v, 2)) for k, v in row.items()} for kind, row in ours.items()})
print(f"paper: ACC {task.paper['ACC']}, yes/no {task.paper['ACC_yes_no']}")

# %% [markdown]
# ## 7 · Real model only
# With a real checkpoint, ask a real clip open questions (`../shared/audio`'s glass-breaking recording).
# Skipped on nano.

# %%
clip = Path("../../shared/audio/glass-breaking-151256.mp3")
if MODEL != "nano" and clip.is_file():
    for q in ("What is breaking?", "Is it indoors?", "How many times does it break?"):
        print(q, "→", model.generate(wb.preset("clothoaqa", question=q), clip, max_new_tokens=task.max_new_tokens).text)
else:
    print("skipped: needs a real Qwen-Audio checkpoint (WORKBENCH_MODEL) and ../shared/audio")

# %% [markdown]
# ## Exercise
# How robust is the model to the *wording*? Ask every question of the run again in lowercase without
# its question mark, and count how many answers change.

# %%
# Solution
again = [model.generate(wb.preset("clothoaqa", question=i.question.lower().rstrip("?")), i.audio,
                        max_new_tokens=task.max_new_tokens).text for i in items]
pd.DataFrame({"question": [i.question for i in items], "as asked": result.outputs, "lowercase, no '?'": again}
             ).assign(changed=lambda frame: frame["as asked"] != frame["lowercase, no '?'"])
