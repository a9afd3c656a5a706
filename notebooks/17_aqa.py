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
# **Learning objectives.** After this notebook you can
# 1. read the one prompt that carries free text between its tags (`<|question|>…<|answer|>`);
# 2. explain how Clotho-AQA's one-row-per-annotator file shapes the official accuracy, and why yes/no
#    questions are reported apart from open ones;
# 3. measure how sensitive a model is to the wording of a question.
#
# **Run time**: about 1 minute on 2 CPU cores with nano. Configuration from the environment:
# `WORKBENCH_MODEL`, `WORKBENCH_DEVICE`, `WORKBENCH_DTYPE`, `WORKBENCH_DATA` (a folder holding
# `clothoaqa/` as distributed: `clotho_aqa_test.csv` beside `audio_files/`); without it, a native-layout
# replica is written to a temporary folder. Cells marked **real model only** skip on nano.

# %%
# %matplotlib inline
import os

import pandas as pd
from IPython.display import Audio, display

import workbench as wb
from workbench.evaluation import metrics
from workbench.evaluation.walkthrough import paper_table, prompt_table, walkthrough
from workbench.figures.style import save_notebook_figure
from workbench.figures.tasks import plot_bars
from workbench.tags import swap_variants

wb.figures.use_style()
pd.set_option("display.max_colwidth", 100)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model
DATA = os.environ.get("WORKBENCH_DATA")                 # a folder with clothoaqa/ as distributed; None: replica
LIMIT = int(os.environ.get("WORKBENCH_LIMIT", "6"))     # questions
REAL_CLIP = "../../shared/audio/glass-breaking-151256.mp3"

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
task = wb.get_task("clotho-aqa")
prompt = wb.preset(task.preset, question="How many times does the bell ring?")
print("<audio>FILE</audio>" + prompt.render())
prompt_table(prompt, {
    "start": "an analysis task", "audio_lang": "English (the question's language)",
    "task": "<|question|>: the question text follows", "question": "the question, then <|answer|>: answer now"})

# %% [markdown]
# No text-language, timestamp or instruction tags. Decoding: greedy, at most `max_new_tokens` new
# tokens: the answer is a word (yes, no, a number, a source).

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
paper_table(task.name)

# %% [markdown]
# ## 4 · A run through the evaluation runner
# The replica holds questions about clips of nano's held-out split (a count, a yes/no presence question,
# which event comes first), three answer rows each, in Clotho-AQA's CSV layout. A question asked several
# times is generated once.

# %%
wt = walkthrough(task.name, model=MODEL, device=DEVICE, dtype=DTYPE, data=DATA, limit=LIMIT)
result = wt.result
print(wt)
wt.metrics.round(3)

# %%
items = wt.items()
records = wt.records
records["question"] = [item.question for item in items]
records[["id", "question", "reference", "output", "score.correct", "score.correct_standard", "score.yes_no"]]

# %% [markdown]
# Accuracy on yes/no questions and on open ones (a count, a source), beside the paper's (which reports
# all rows and the yes/no rows; no bar where there is no number). Listen to the first two clips beside
# the figure.

# %%
groups = {"all": records, "yes/no": records[records["score.yes_no"]], "open": records[~records["score.yes_no"]]}
scores = {kind: {m.recipe: m.value for m in metrics.aqa_metrics(list(g["output"]), list(g["reference"]))
                 if m.name == "ACC"} for kind, g in groups.items()}
table = pd.DataFrame({f"{wt.name}, {recipe}": {kind: s.get(recipe) for kind, s in scores.items()}
                      for recipe in ("official", "standard")})
table["Qwen-Audio (paper)"] = [task.paper["ACC"], task.paper["ACC_yes_no"], None]
table["previous best"] = [task.previous_best["ACC"][0], task.previous_best["ACC_yes_no"][0], None]
print({kind: len(g) for kind, g in groups.items()}, "questions")
display(save_notebook_figure(plot_bars(table, ylabel="accuracy", fmt="{:.2f}",
                                       colors=dict(zip(table.columns, ["C0", "#9ecae1", "C1", "C7"])),
                                       title=f"Clotho-AQA: {wt.name} on yes/no and open questions"),
                             "accuracy_yes_no_vs_open"))
for item, record in list(zip(items, result.records))[:2]:
    print(f"{item.question} → {record['output']!r} (accepted: {record['reference']})")
    display(Audio(wb.load_audio(record["audio"]), rate=16000))
table.round(2)

# %% [markdown]
# ## 5 · A tag probe: another question, then another task
# The first clip: its own question, other questions, and the `<|question|>` task tag swapped for
# `<|caption|>` and `<|keyword|>` (the question text then goes, as those tasks take none).

# %%
item = items[0]
questions = [item.question, "Is a bell ringing?", "Is a dog barking?", "How many times does the dog bark?",
             "Which sound comes first?"]
own = wb.preset("clothoaqa", question=item.question)
rows = [{"prompt": q, "output": wt.generate(wb.preset("clothoaqa", question=q), item.audio)} for q in questions]
rows += [{"prompt": v.label, "output": wt.generate(v.prompt, item.audio, max_new_tokens=30)}
         for v in swap_variants(own, slot="task", values=["caption", "keyword"])]
pd.DataFrame(rows)

# %% [markdown]
# ## 6 · What nano can and cannot do
# nano's questions come from a few templates over its procedural sound events: counts, yes/no presence,
# "is the first beep higher than the last", which event comes first. Look at the probe above for the
# *form* of its answers (a count for "how many", yes or no for "is …?", an event for "which") and at
# the accuracies for their *content*: counting events in a mixture is the hardest thing nano was asked
# to learn, and a wrong count is a failure, not a near miss. A handful of questions gives a very rough
# accuracy, and a question outside its templates can only get an answer of a template's form. This run
# against the paper:

# %%
print(f"{wt.name}: " + ", ".join(f"{kind} {s['official']:.2f}" for kind, s in scores.items() if s.get("official") is not None)
      + f" (official, over rows); paper: ACC {task.paper['ACC']}, yes/no {task.paper['ACC_yes_no']}")

# %% [markdown]
# ## 7 · Real model only
# With a real checkpoint, ask a real clip open questions (`../shared/audio`'s glass-breaking recording).
# Skipped on nano.

# %%
if wt.real and os.path.isfile(REAL_CLIP):
    for q in ("What is breaking?", "Is it indoors?", "How many times does it break?"):
        print(q, "→", wt.generate(wb.preset("clothoaqa", question=q), REAL_CLIP))
else:
    print("skipped: needs a real Qwen-Audio checkpoint (WORKBENCH_MODEL) and ../shared/audio")

# %% [markdown]
# ## Exercise
# How robust is the model to the *wording*? Ask every question of the run again in lowercase without
# its question mark, and count how many answers change.

# %%
# Solution
again = [wt.generate(wb.preset("clothoaqa", question=i.question.lower().rstrip("?")), i.audio) for i in items]
pd.DataFrame({"question": [i.question for i in items], "as asked": result.outputs, "lowercase, no '?'": again}
             ).assign(changed=lambda frame: frame["as asked"] != frame["lowercase, no '?'"])
