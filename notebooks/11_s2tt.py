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
# **Learning objectives.** After this notebook you can
# 1. say how one prompt asks for a translation (the source language is the *audio* language tag, the
#    target the *text* language tag);
# 2. compute the paper's BLEU and say what a stray tag, a missing capital or the tokenizer costs in it;
# 3. probe whether the output language really follows the target tag.
#
# **Run time**: about 1 minute on 2 CPU cores with nano. Configuration from the environment, as in every
# task notebook: `WORKBENCH_MODEL` (a Qwen-Audio checkpoint directory), `WORKBENCH_DEVICE`,
# `WORKBENCH_DTYPE`, `WORKBENCH_DATA` (a folder holding `covost2/` as distributed: the Common Voice
# clips and the CoVoST 2 TSVs); without it, a native-layout replica is written to a temporary folder.
# Cells marked **real model only** skip on nano.

# %%
# %matplotlib inline
import os

import pandas as pd
import sacrebleu
from IPython.display import Audio, display

import workbench as wb
from workbench.evaluation import metrics
from workbench.evaluation.metrics_text import TAG
from workbench.evaluation.walkthrough import official_prompt, paper_table, prompt_table, walkthrough
from workbench.figures.style import save_notebook_figure
from workbench.figures.tasks import plot_bars
from workbench.tags import swap_variants

wb.figures.use_style()
pd.set_option("display.max_colwidth", 110)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model
DATA = os.environ.get("WORKBENCH_DATA")                 # a folder with covost2/ as distributed; None: replicas
LIMIT = int(os.environ.get("WORKBENCH_LIMIT", "6"))     # items per direction
TASKS = ["covost2-en-de", "covost2-zh-en"]

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
task = wb.get_task(TASKS[0])
prompt = official_prompt(task)
print("<audio>FILE</audio>" + prompt.render())
prompt_table(prompt, {
    "start": "a transcription-family task (the output is language, not a label)",
    "audio_lang": "the SOURCE language: what is spoken",
    "task": "translate, rather than transcribe",
    "text_lang": "the TARGET language: what to write",
    "timestamps": "no time tags",
    "instructions": "with inverse text normalisation: written form, capitals and punctuation"})

# %% [markdown]
# Decoding: greedy, stop at `<|endoftext|>`, at most `max_new_tokens` new tokens, tags kept in the
# decoded text (the official script does not remove them before scoring).

# %%
print({name: wb.get_task(name).max_new_tokens for name in TASKS})

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
s2tt = [name for name, t in wb.TASKS.items() if t.kind == "s2tt"]
paper = paper_table(*s2tt).droplevel("metric")
paper.index = [f"{wb.get_task(n).language}→{wb.get_task(n).target_language}" for n in paper.index]
paper

# %% [markdown]
# ## 4 · A run through the evaluation runner, both directions
# The replica holds en→de and zh→en items of nano's held-out split in CoVoST 2's layout (mp3 clips,
# one TSV per direction).

# %%
wt = walkthrough(TASKS, model=MODEL, device=DEVICE, dtype=DTYPE, data=DATA, limit=LIMIT)
print(wt)
wt.metrics.round(2)

# %%
records = wt.records
records[["task", "id", "reference", "output", "score.bleu"]].round(1)

# %% [markdown]
# BLEU per direction: the model's corpus BLEU on this run beside the paper's and the previous best, for
# all the directions of the paper (no bar where there is no number: directions not run here).

# %%
ours = {f"{wb.get_task(n).language}→{wb.get_task(n).target_language}": {
    f"{wt.name}, official": r.metric("BLEU").value, f"{wt.name}, tags stripped": r.metric("BLEU", "standard").value}
    for n, r in wt.results.items()}
table = pd.DataFrame(ours).T.reindex(paper.index).join(paper[["Qwen-Audio (paper)", "previous best"]])
save_notebook_figure(plot_bars(table, ylabel="BLEU", fmt="{:.1f}",
                               colors=dict(zip(table.columns, ["C0", "#9ecae1", "C1", "C7"])),
                               title=f"CoVoST 2 BLEU: {wt.name} on {'the replica' if wt.on_replicas else 'the data'} "
                                     "vs the paper"),
                     "bleu_per_pair")

# %% [markdown]
# Listen to one clip of each direction, with its reference and output:

# %%
for name in TASKS:
    record = wt.example(name)
    print(f"{name} · {record['id']}\n  reference: {record['reference']}\n  output:    {record['output']}")
    display(Audio(wb.load_audio(record["audio"]), rate=16000))

# %% [markdown]
# ## 5 · A tag probe: swap the target language
# The same English clip, the text-language tag changed to each of the others nano was trained to
# write, then the task tag changed to `<|transcribe|>` (from a model that learned the tags, the English
# words themselves).

# %%
item = wt.example(TASKS[0])
wt.probe(prompt, item["audio"], swap_variants(prompt, slot="text_lang", values=["fr", "es", "zh", "en"])
         + swap_variants(prompt, slot="task", values=["transcribe"]))

# %% [markdown]
# ## 6 · What nano can and cannot do
# nano translates sentences of its own ~70-word grammar between five languages, learned from a few
# hundred synthetic examples per task. Read the outputs above for what survives: usually the sentence
# frame and the output language; often not the nouns and adjectives; now and then a word of another
# language or a tag in the middle of the text, which the official BLEU counts as a wrong word. Its
# BLEU on a handful of replica sentences is not comparable with the paper's: the sentences are
# synthetic and the sample is tiny. A BLEU near zero is a failure to translate, whatever the sample.
# This run:

# %%
pd.DataFrame([{"task": name, "official BLEU": r.metric("BLEU").value, "standard BLEU": r.metric("BLEU", "standard").value,
               "paper BLEU": r.paper["BLEU"], "outputs holding a tag": sum("<|" in o for o in r.outputs),
               "outputs": len(r.outputs)} for name, r in wt.results.items()]).round(1)

# %% [markdown]
# ## 7 · Real model only
# With a real checkpoint, run the probe above on the clip with targets nano never wrote: the target tag
# should move the output language for every pair the paper reports. Skipped on nano.

# %%
if wt.real:
    display(wt.probe(prompt, item["audio"], swap_variants(prompt, slot="text_lang", values=["zh", "fr", "es", "ja"])))
else:
    print("skipped: needs a real Qwen-Audio checkpoint (WORKBENCH_MODEL)")

# %% [markdown]
# ## Exercises
# **1.** BLEU punishes every wrong word form; chrF (character n-gram F-score) gives partial credit to
# "roten" for "rote". Score both directions with `sacrebleu.corpus_chrf` on the tag-stripped outputs
# and compare with BLEU. Which direction gains more, and why might that be?

# %%
# Solution 1
pd.DataFrame([{"task": name, "BLEU (standard)": r.metric("BLEU", "standard").value,
               "chrF": sacrebleu.corpus_chrf([" ".join(TAG.sub(" ", o).split()) for o in r.outputs],
                                             [[rec["reference"] for rec in r.records]]).score}
              for name, r in wt.results.items()]).round(1)

# %% [markdown]
# **2.** Corpus BLEU is not the mean of sentence BLEUs. Compare the two for the en→de run: which is
# higher here, and which sentences decide the difference?

# %%
# Solution 2
de = records[records["task"] == TASKS[0]]
print(f"corpus BLEU {wt.results[TASKS[0]].metric('BLEU').value:.1f}, mean sentence BLEU {de['score.bleu'].mean():.1f}")
de[["id", "output", "score.bleu"]].round(1)
