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
# # 04 · The nano recipe: Qwen-Audio trained in miniature
#
# `workbench.load("nano")` is a real Qwen-Audio v1 — the same encoder, splice, Qwen2 LLM, tokenizer
# class and hierarchical tags as the published 8.4 B model — at 1/1,100 of its size, trained on this
# machine by `recipes/train_nano.py`. **You will learn** what that recipe does and where it departs
# from the paper's, what the synthetic corpus sounds like, how a training sequence is built, and what
# the shipped model can and cannot do on clips it never saw.
#
# **Runs** in about 2 min of CPU time (measured: 139 s on the shared 2-core machine; it generates a
# small corpus and takes eight training steps). `MODEL` only changes section 5 (the generations); the rest is about nano itself.
#
# ## 0 · What the recipe does, and what the paper does
# The paper (arXiv 2311.07919, §3) trains in two stages: **multitask pretraining** updates the audio
# encoder while the LLM (a pretrained Qwen-7B) stays **frozen**; **supervised fine-tuning** then updates
# the LLM while the encoder stays **frozen**. nano v1 does **neither**:
#
# 1. corpus: `workbench.synth`, ten tasks with their official tag prompts; speech is espeak-ng reading
#    sentences of a small parallel grammar (61 English words, `grammar.vocabulary("en")`, with exact
#    German, French, Spanish and Mandarin translations), sounds and scenes are procedural, notes are
#    rendered by FluidSynth; 16,800 items, split by content so test sentences never occur in training;
# 2. tokenizer: a byte-level BPE learned on the corpus texts (1,675 ranks), then every Qwen-Audio tag
#    as a special token, numbered after the ranks;
# 3. audio encoder: Whisper tiny.en's conv stem and first two blocks, **frozen for the whole run** (their
#    pooled output is computed once per clip); only `ln_post`, `proj` and the audio bos/eos vectors train;
# 4. LLM: a small Qwen2 (4 layers, width 192) **from random weights** — not a pretrained language model —
#    trained **in both stages**, together with `ln_post`/`proj`/bos/eos;
# 5. stage 1: 7,000 steps on the tag tasks (ASR items three times over); stage 2: 800 steps of ChatML
#    chat items mixed one to one with tag items, so that the one model answers both. AdamW, peak
#    learning rate 2e-3 with 100 warm-up steps and a cosine decay to 10 %, batches of at most 2,048
#    padded tokens, loss on the target tokens only; about 42 minutes on two CPU threads.
#
# So what nano shares with Qwen-Audio is the architecture, the tags and the data format, not the
# training schedule: any finding on nano about *which part learned what* (encoder vs LLM) does not
# transfer to the published model, whose encoder was trained and whose LLM was pretrained on text.

# %%
# %matplotlib inline
import json
import os
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Audio, display

import workbench as wb
from workbench.figures.style import save_notebook_figure
from workbench.models.qwen_audio.nano import NANO_DIR, nano_evaluation
from workbench.synth import CorpusOptions, generate_corpus, read_manifest, task_prompt

sys.path.insert(0, str(Path("..", "recipes").resolve()))   # the recipe's own functions
from nano_data import batch_loss, build_sequence, pooled_frames, read_clip  # noqa: E402

wb.figures.use_style()
torch.set_num_threads(2)
pd.set_option("display.max_colwidth", 120)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model

# %% [markdown]
# ## 1 · The corpus
# A few items of every task, generated here (the same generator, seed and split rule as the training
# corpus; an item depends only on seed, task, split and index). Speech is espeak-ng in five
# languages, sounds and scenes are procedural, notes are rendered by FluidSynth.

# %%
corpus = Path(tempfile.mkdtemp(prefix="nano_corpus_"))
summary = generate_corpus(corpus, CorpusOptions(per_task=3, seed=0))
rows = read_manifest(corpus / "train.jsonl")
pd.DataFrame([{"task": r["task"], "seconds": round(r["duration"], 2),
               "prompt": r["prompt"][-90:], "reference": r["reference"][:90]} for r in rows])

# %% [markdown]
# Listen to one item per task:

# %%
for r in rows:
    print(f"{r['task']:5s} → {r['reference'][:80]}")
    display(Audio(read_clip(r["audio_path"]), rate=wb.audio.SAMPLE_RATE))

# %% [markdown]
# …and look at their log-mel spectrograms (each cropped to the clip's own frames; same order as the
# players above):

# %%
fig, axes = plt.subplots(5, 2, figsize=(11, 12))
for r, ax in zip(rows, axes.flat):
    samples = read_clip(r["audio_path"])
    wb.figures.plot_mel(wb.log_mel(samples)[:, : wb.audio.mel_frames(len(samples))], ax=ax,
                        title=f"{r['task']} ({r['duration']:.1f} s)")
save_notebook_figure(fig, "corpus_one_item_per_task_mel")
plt.show()

# %% [markdown]
# ## 2 · The tag format, as the nano tokenizer reads it
# The nano tokenizer is the same `QwenAudioTokenizer` class reading a small BPE ranks file; the
# 3,522 Qwen-Audio special tokens follow the ranks in the official order, so `<|endoftext|>` is the
# number of ranks (151643 in Qwen's vocabulary) and `<audio>` the second-to-last id (155163 in
# Qwen's). Every tag is one token; the ids are read off the tokenizer.

# %%
nano = wb.load("nano")          # this section is about nano's own tokenizer, whatever MODEL is
tok = nano.tokenizer
print(nano)
print({"BPE ranks": tok.n_ranks, "<|endoftext|>": tok.endoftext_id, "<audio>": tok.audio_start_id,
       "vocabulary": tok.vocab_size})
asr = rows[0]
ids = tok.encode(asr["prompt"] + asr["reference"])
pd.DataFrame({"id": ids, "token": tok.convert_ids_to_tokens(ids)}).T

# %% [markdown]
# A training sequence is the prompt exactly as the model sees it at inference (`<audio>`, one pad
# per 40 ms audio token, `</audio>`, the tags) followed by the reference and the stop token; the
# loss counts only the reference and the stop token (`<|endoftext|>` after tags, `<|im_end|>` in chat).

# %%
features = {p: pooled_frames(nano.encoder, read_clip(p)) for r in rows for p in r.get("audio_paths", [r["audio_path"]])}
sequences = [build_sequence(tok, r, features) for r in rows]
s = sequences[0]
print(f"{len(s.ids)} tokens: {s.n_prompt} prompt ({features[asr['audio_path']].shape[0]} audio tokens), "
      f"{len(s.ids) - s.n_prompt} target:", tok.decode(s.ids[s.n_prompt:]))

# %% [markdown]
# ## 3 · A few training steps, live
# The speed trick of the recipe: the Whisper blocks are frozen for the whole run, so each clip's pooled
# encoder frames are computed once (`pooled_frames`, above); training then runs `ln_post` → `proj` →
# bos/eos and the LLM only (section 0). Here: eight steps on this tiny batch (training-split items: item i of a split
# is the same in every corpus of seed 0), starting from a fresh copy of the shipped weights, with
# the recipe's own loss.

# %%
student = wb.load("nano")
trainable = [p for n, p in student.encoder.named_parameters() if n.startswith(("ln_post", "proj", "audio_bos"))]
trainable += list(student.llm.parameters())
for parameter in trainable:   # a loaded model is frozen for inference
    parameter.requires_grad_(True)
optimizer = torch.optim.AdamW(trainable, lr=1e-3)
losses = []
for _ in range(8):
    loss, n_tokens = batch_loss(student.encoder, student.llm, sequences, features, tok.endoftext_id)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
pd.DataFrame({"step": range(1, 9), "loss": losses}).set_index("step").T

# %% [markdown]
# The shipped model's own training log (`assets/nano/train_log.jsonl`): the training loss of every
# step (smoothed over 100 steps) and the validation loss every 200 steps, with the switch to stage 2.
# The jump at the switch is the first chat batches; the widening gap between training and validation
# loss says that nano memorises much of its small corpus — its held-out numbers below are the ones to
# trust.

# %%
log = pd.read_json(NANO_DIR / "train_log.jsonl", lines=True)
fig, ax = plt.subplots(figsize=(9, 3.2))
ax.plot(log["step"], log["loss"].rolling(100, min_periods=1).mean(), label="training (mean of 100 steps)")
validated = log.dropna(subset=["validation_loss"])
ax.plot(validated["step"], validated["validation_loss"], marker="o", markersize=3, label="validation")
ax.axvline(log.loc[log["stage"] == 2, "step"].min(), color="0.5", linestyle="--", linewidth=1)
ax.text(log.loc[log["stage"] == 2, "step"].min(), ax.get_ylim()[1] * 0.9, " stage 2: chat + tag replay", fontsize=8)
ax.set(yscale="log", xlabel="step", ylabel="loss (nats per target token)", title="nano's training run")
ax.legend(frameon=False)
save_notebook_figure(fig, "nano_training_loss")
plt.show()

# %% [markdown]
# ## 4 · The shipped model's numbers
# Measured on the corpus's held-out test split when the checkpoint was trained
# (`recipes/eval_nano.py`, stored in `assets/nano/eval.json`): test sentences, mixtures, scenes and
# notes never occur in training.

# %%
numbers = nano_evaluation()
table = [{"gate": "tag routing (output has the asked form)", "value": numbers["routing"]["share"], "chance / bar": "≥ 0.95"},
         {"gate": "ASR CER, English", "value": numbers["tasks"]["asr"]["cer_en"], "chance / bar": "≤ 0.15"},
         {"gate": "MNA pitch within ±1 semitone", "value": numbers["tasks"]["mna"]["pitch_within_1"], "chance / bar": "≥ 0.80"},
         {"gate": "MNA instrument accuracy", "value": numbers["tasks"]["mna"]["instrument_accuracy"],
          "chance / bar": round(numbers["tasks"]["mna"]["instrument_chance"], 3)}]
table += [{"gate": f"{task.upper()} accuracy", "value": numbers["tasks"][task]["accuracy"],
           "chance / bar": round(numbers["tasks"][task]["chance_uniform"], 3)} for task in ("asc", "ser", "vsc", "aqa")]
table += [{"gate": "S2TT BLEU", "value": numbers["tasks"]["s2tt"]["bleu"], "chance / bar": "—"},
          {"gate": "task-tag swap on speech (ASR, S2TT, SER, SRWT): output has the asked form",
           "value": numbers["tag_swap"]["mean"], "chance / bar": "—"},
          {"gate": "target-language swap: output in the asked language",
           "value": numbers["language_swap"]["mean"], "chance / bar": 0.25}]
pd.DataFrame(table).round(3)

# %%
pd.DataFrame(numbers["routing"]["per_task"], index=["routing"]).round(3)

# %% [markdown]
# ## 5 · Live generations
# The held-out clips shipped with the model (`assets/nano/eval_clips/`), each under its own tags:

# %%
model = nano if MODEL == "nano" else wb.load(MODEL, device=DEVICE, dtype=DTYPE)
clips = NANO_DIR / "eval_clips"
shipped = [json.loads(line) for line in (clips / "manifest.jsonl").read_text().splitlines()]
prompts = [f"<audio>{r['audio']}</audio>{r['prompt']}" for r in shipped]
outputs = model.generate_batch(prompts, audio_dir=clips, max_new_tokens=96)
generations = pd.DataFrame([{"task": r["task"], "reference": r["reference"], "output": g.text.strip()}
                            for r, g in zip(shipped, outputs)])
generations["exact match"] = generations["output"] == generations["reference"]
generations

# %% [markdown]
# Exact match is the official score only for the label tasks (ASC, SER, VSC, AQA); ASR is scored by
# WER, S2TT by BLEU, AAC by caption metrics, MNA field by field, SRWT by WER and timestamp shift
# (notebooks 10–18). Still, read the rows that do not match: **those are nano's failures** — a wrong
# word in a transcript, a wrong label, a wrong pitch — on clips from the world it was trained on.

# %%
generations.groupby("task")["exact match"].agg(["sum", "count"]).rename(columns={"sum": "exact", "count": "clips"})

# %% [markdown]
# Swapping the task tag on the same English speech changes what comes out; swapping the target
# language of a translation changes its language.

# %%
speech = next(r for r in shipped if r["task"] == "asr")
display(Audio(read_clip(clips / speech["audio"]), rate=wb.audio.SAMPLE_RATE))
swaps = {"asr": task_prompt("asr", lang="en"), "aac": task_prompt("aac"), "asc": task_prompt("asc"),
         "ser": task_prompt("ser"), "mna": task_prompt("mna")}
swaps |= {f"s2tt → {tgt}": task_prompt("s2tt", src="en", tgt=tgt) for tgt in ("de", "fr", "es", "zh")}
print("reference transcript:", speech["reference"])
pd.DataFrame([{"tags": name, "prompt": tags,
               "output": model.generate(f"<audio>{speech['audio']}</audio>{tags}", audio_dir=clips).text}
              for name, tags in swaps.items()])

# %% [markdown]
# ## 6 · Exercises
# **1.** From the training log: how many optimiser steps did each stage take, and how many target
# tokens did nano see in all?

# %%
# Solution
per_stage = log.groupby("stage").agg(steps=("step", "size"), tokens=("tokens", "sum"))
print(per_stage, f"\n{log['tokens'].sum():,} target tokens in {log['seconds'].max() / 60:.0f} min")
assert per_stage["steps"].to_dict() == {1: 7000, 2: 800}

# %% [markdown]
# **2.** Which of the shipped clips' tasks does nano get exactly right every time, and which not at all?

# %%
# Solution
by_task = generations.groupby("task")["exact match"].mean()
print("always:", sorted(by_task[by_task == 1].index), "· never:", sorted(by_task[by_task == 0].index))
