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
# machine with the paper's recipe (`recipes/train_nano.py`):
#
# 1. a synthetic multitask corpus (`workbench.synth`): ten tasks, each with its official tag prompt;
# 2. a tokenizer of its own: byte-level BPE learned on the corpus texts (1,675 ranks), then every
#    Qwen-Audio tag as a special token, numbered after the ranks;
# 3. the audio encoder initialised from Whisper tiny.en, a small Qwen2 LLM;
# 4. multitask pretraining on the tag tasks, then ChatML fine-tuning (chat items mixed with tag items).
#
# This notebook shows the corpus (listen, look), the tag format as the nano tokenizer sees it, a few
# training steps live, and the shipped model's measured numbers and generations.

# %%
# %matplotlib inline
import json
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Audio, display

import workbench as wb
from workbench.models.qwen_audio.nano import NANO_DIR, nano_evaluation
from workbench.synth import CorpusOptions, generate_corpus, read_manifest, task_prompt

sys.path.insert(0, str(Path("..", "recipes").resolve()))   # the recipe's own functions
from nano_data import batch_loss, build_sequence, pooled_frames, read_clip  # noqa: E402

wb.figures.use_style()
torch.set_num_threads(2)
pd.set_option("display.max_colwidth", 120)

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
# …and look at their log-mel spectrograms (each cropped to the clip's own frames):

# %%
fig, axes = plt.subplots(5, 2, figsize=(11, 12))
for r, ax in zip(rows, axes.flat):
    samples = read_clip(r["audio_path"])
    wb.figures.plot_mel(wb.log_mel(samples)[:, : wb.audio.mel_frames(len(samples))], ax=ax,
                        title=f"{r['task']} ({r['duration']:.1f} s)")

# %% [markdown]
# ## 2 · The tag format, as the nano tokenizer reads it
# The nano tokenizer is the same `QwenAudioTokenizer` class reading a small BPE ranks file; the
# 3,522 Qwen-Audio special tokens follow the ranks in the official order, so `<|endoftext|>` is the
# number of ranks (151643 in Qwen's vocabulary) and `<audio>` the second-to-last id (155163 in
# Qwen's). Every tag is one token; the ids are read off the tokenizer.

# %%
nano = wb.load("nano")
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
# The speed trick of the recipe: the Whisper blocks are frozen, so each clip's pooled encoder
# frames are computed once (`pooled_frames`, above); training then runs `ln_post` → `proj` → bos/eos
# and the LLM only. Here: eight steps on this tiny batch (training-split items: item i of a split
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
clips = NANO_DIR / "eval_clips"
shipped = [json.loads(line) for line in (clips / "manifest.jsonl").read_text().splitlines()]
prompts = [f"<audio>{r['audio']}</audio>{r['prompt']}" for r in shipped]
outputs = nano.generate_batch(prompts, audio_dir=clips, max_new_tokens=96)
pd.DataFrame([{"task": r["task"], "reference": r["reference"], "output": g.text} for r, g in zip(shipped, outputs)])

# %% [markdown]
# Swapping the task tag on the same English speech changes what comes out; swapping the target
# language of a translation changes its language.

# %%
speech = next(r for r in shipped if r["task"] == "asr")
display(Audio(read_clip(clips / speech["audio"]), rate=wb.audio.SAMPLE_RATE))
swaps = {"asr": task_prompt("asr", lang="en"), "aac": task_prompt("aac"), "asc": task_prompt("asc"),
         "ser": task_prompt("ser"), "mna": task_prompt("mna")}
swaps |= {f"s2tt → {tgt}": task_prompt("s2tt", src="en", tgt=tgt) for tgt in ("de", "fr", "es", "zh")}
pd.DataFrame([{"tags": name, "prompt": tags,
               "output": nano.generate(f"<audio>{speech['audio']}</audio>{tags}", audio_dir=clips).text}
              for name, tags in swaps.items()])
