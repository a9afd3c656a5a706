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
# # 11 · S2TT: speech translation on CoVoST 2
#
# **You will learn** how one prompt asks for a translation (the source language is the *audio*
# language tag, the target the *text* language tag), how the paper's BLEU is computed and what a
# stray tag or a missing capital costs in it, and how to probe whether the output language really
# follows the target tag.
#
# **Runs** in about 20 s on one CPU core with nano. Configuration from the environment, as in every
# task notebook: `WORKBENCH_MODEL` (a Qwen-Audio checkpoint directory), `WORKBENCH_DEVICE`,
# `WORKBENCH_DTYPE`, `WORKBENCH_DATA` (a folder holding `covost2/` as distributed: the Common Voice
# clips and the CoVoST 2 TSVs); without it, a native-layout replica is written to a temporary folder.

# %%
# %matplotlib inline
import os
import tempfile
from pathlib import Path

import pandas as pd
import sacrebleu
from IPython.display import Audio, display

import workbench as wb
from workbench.evaluation import metrics
from workbench.evaluation.metrics_text import TAG
from workbench.evaluation.replicas import build_replicas
from workbench.evaluation.runner import evaluate
from workbench.evaluation.tasks import TASKS, get_task
from workbench.figures.tasks import plot_bars
from workbench.tags import swap_variants

wb.figures.use_style()
pd.set_option("display.max_colwidth", 110)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model
DATA = os.environ.get("WORKBENCH_DATA")                 # a folder with the datasets as distributed; None: replicas
LIMIT = int(os.environ.get("WORKBENCH_LIMIT", "6"))     # items per direction
FOLDERS = {"covost2-en-de": "covost2", "covost2-zh-en": "covost2"}   # task → folder in DATA

# %% [markdown]
# ## 1 · The task
# Speech-to-text translation hears one language and writes another. It is ASR and machine translation
# at once, without a transcript in between to check: a misheard word becomes a wrong translation, and
# the output must be *reordered* (German puts the verb last, Chinese the time first), so the model
# cannot simply translate as the audio goes. CoVoST 2 is read Common Voice sentences with human
# translations, 21 languages into English and English into 15.
#
# ## 2 · The official prompt, tag by tag

# %%
task = get_task("covost2-en-de")
prompt = wb.preset(task.preset, **task.preset_fields)
print("<audio>FILE</audio>" + prompt.render())
meaning = {"start": "a transcription-family task (the output is language, not a label)",
           "audio_lang": "the SOURCE language: what is spoken",
           "task": "translate, rather than transcribe",
           "text_lang": "the TARGET language: what to write",
           "timestamps": "no time tags",
           "instructions": "with inverse text normalisation: written form, capitals and punctuation"}
pd.DataFrame([{"slot": slot, "tag": text, "what it says": meaning[slot]} for slot, text in prompt.slots()])

# %% [markdown]
# Decoding: greedy, stop at `<|endoftext|>`, at most `max_new_tokens` new tokens, tags kept in the
# decoded text (the official script does not remove them before scoring).

# %%
print({name: get_task(name).max_new_tokens for name in FOLDERS})

# %% [markdown]
# ## 3 · The official scoring, worked through
# `evaluate_st.py` scores `sacrebleu.corpus_bleu(outputs, [references])` with the `13a` tokenizer
# (`zh` for a Chinese target, `ja-mecab` for Japanese), on the outputs *as decoded*: a tag left in
# the text counts as a wrong word. BLEU is case-sensitive, so the `<|itn|>` written form matters.
# Take one reference and three ways of getting it slightly wrong:

# %%
reference = "Der Fuchs findet den roten Tisch."
attempts = {"exact": reference,
            "spoken form (what <|wo_itn|> writes)": "der fuchs findet den roten tisch",
            "a tag left in": reference + "<|endoftext|>",
            "one word wrong": "Der Fuchs findet den blauen Tisch."}
pd.DataFrame([{"output": name, "text": text, "official BLEU": metrics.official_bleu([text], [reference], "de").value,
               "standard BLEU (tags stripped)": metrics.standard_bleu([text], [reference], "de").value}
              for name, text in attempts.items()]).round(1)

# %% [markdown]
# A single wrong word in a six-word sentence removes many 4-grams at once, which is why sentence BLEU
# is harsh and why BLEU is reported over a corpus. The tokenizer matters too: `13a` splits a Chinese
# sentence only at punctuation, the `zh` tokenizer splits it into characters.

# %%
print({target: metrics.bleu_tokenizer(target) for target in ("de", "en", "zh", "ja")})
zh_ref, zh_out = "狐狸在买杯子。", "狐狸买杯子。"
print({tokenize: round(sacrebleu.sentence_bleu(zh_out, [zh_ref], tokenize=tokenize).score, 1)
       for tokenize in ("13a", "zh")})

# %% [markdown]
# The paper's numbers beside the best earlier system, for every direction in the registry:

# %%
paper = pd.DataFrame([{"pair": f"{t.language}→{t.target_language}", "Qwen-Audio (paper)": t.paper["BLEU"],
                       "previous best": t.previous_best["BLEU"][0], "by": t.previous_best["BLEU"][1]}
                      for t in TASKS.values() if t.kind == "s2tt"]).set_index("pair")
paper

# %% [markdown]
# ## 4 · A run: `evaluate` on both directions
# The replica holds en→de and zh→en items of nano's held-out split in CoVoST 2's layout (mp3 clips,
# one TSV per direction). With a real checkpoint `evaluate` also checks that batched outputs equal
# one-at-a-time outputs; for nano that check lives in the test suite and is off here.

# %%
if DATA:
    data = Path(DATA)
else:
    data = Path(tempfile.mkdtemp(prefix="wb_replicas_"))
    build_replicas(data, items_per_dataset=6)
runs = Path(tempfile.mkdtemp(prefix="wb_runs_"))
model = wb.load(MODEL, device=DEVICE, dtype=DTYPE)
results = {name: evaluate(model, name, data / folder, runs / name, limit=LIMIT, progress=False,
                          check_batch=MODEL != "nano") for name, folder in FOLDERS.items()}
pd.concat({name: r.to_pandas().drop(columns="note") for name, r in results.items()}).round(2)

# %%
records = pd.concat({name: r.records_to_pandas() for name, r in results.items()}, names=["task"]).reset_index(0)
records[["task", "id", "reference", "output", "score.bleu"]].round(1)

# %% [markdown]
# BLEU per direction: nano's corpus BLEU on this run beside the paper's and the previous best, for
# all seven directions of the paper (a dash where there is no number: directions not run here).

# %%
ours = {f"{get_task(n).language}→{get_task(n).target_language}": {
    "nano, official": r.metric("BLEU").value, "nano, tags stripped": r.metric("BLEU", "standard").value}
    for n, r in results.items()}
table = pd.DataFrame(ours).T.reindex(paper.index)[["nano, official", "nano, tags stripped"]]
plot_bars(table.join(paper[["Qwen-Audio (paper)", "previous best"]]), ylabel="BLEU",
          colors={"nano, official": "C0", "nano, tags stripped": "#9ecae1", "Qwen-Audio (paper)": "C1",
                  "previous best": "C7"},
          fmt="{:.1f}", title=f"CoVoST 2 BLEU: {Path(MODEL).name} on {'the data' if DATA else 'the replica'} vs the paper")

# %% [markdown]
# Listen to one clip of each direction, with its reference and output:

# %%
for name, r in results.items():
    record = r.records[0]
    print(f"{name} · {record['id']}\n  reference: {record['reference']}\n  output:    {record['output']}")
    display(Audio(wb.load_audio(record["audio"]), rate=16000))

# %% [markdown]
# ## 5 · A tag probe: swap the target language
# The same English clip, the text-language tag changed to each of the others nano was trained to
# write, then the task tag changed to `<|transcribe|>` (from a model that learned the tags, the English
# words themselves).

# %%
item = results["covost2-en-de"].records[0]
variants = (swap_variants(prompt, slot="text_lang", values=["fr", "es", "zh", "en"])
            + swap_variants(prompt, slot="task", values=["transcribe"]))
base = model.generate(prompt, item["audio"], max_new_tokens=task.max_new_tokens).text
pd.DataFrame([{"variant": "official prompt (→ de)", "output": base}]
             + [{"variant": v.label,
                 "output": model.generate(v.prompt, item["audio"], max_new_tokens=task.max_new_tokens).text}
                for v in variants])

# %% [markdown]
# ## 6 · What nano can and cannot do
# nano (7.6 M parameters) translates sentences of its own ~70-word grammar between five languages,
# learned from a few hundred synthetic examples per task. It usually keeps the sentence frame and
# the output language and gets nouns and adjectives wrong; it sometimes mixes in a word of another
# language or emits a tag in the middle of the text, which the official BLEU counts as a wrong word.
# Its BLEU on a handful of replica sentences is far below the paper's, and not comparable with it:
# the sentences are synthetic and the sample is tiny. This run:

# %%
for name, r in results.items():
    outputs = r.outputs
    print(f"{name}: BLEU {r.metric('BLEU').value:.1f} official, {r.metric('BLEU', 'standard').value:.1f} standard "
          f"(paper {r.paper['BLEU']}); {sum('<|' in o for o in outputs)} of {len(outputs)} outputs hold a tag")

# %% [markdown]
# ## 7 · Real model only
# With a real checkpoint, run the probe above on a real clip: the target tag should move the output
# language for every pair the paper reports. Skipped on nano.

# %%
if MODEL != "nano":
    for v in swap_variants(prompt, slot="text_lang", values=["zh", "fr", "es"]):
        print(v.label, "→", model.generate(v.prompt, item["audio"], max_new_tokens=task.max_new_tokens).text)
else:
    print("skipped: needs a real Qwen-Audio checkpoint (WORKBENCH_MODEL)")

# %% [markdown]
# ## Exercise
# BLEU punishes every wrong word form; chrF (character n-gram F-score) gives partial credit to
# "roten" for "rote". Score both directions with `sacrebleu.corpus_chrf` on the tag-stripped outputs
# and compare with BLEU. Which direction gains more, and why might that be?

# %%
# Solution
pd.DataFrame([{"task": name, "BLEU (standard)": r.metric("BLEU", "standard").value,
               "chrF": sacrebleu.corpus_chrf([" ".join(TAG.sub(" ", o).split()) for o in r.outputs],
                                             [[rec["reference"] for rec in r.records]]).score}
              for name, r in results.items()]).round(1)
