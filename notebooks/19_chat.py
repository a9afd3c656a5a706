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
# # 19 · Chat: multi-turn conversations, `Audio N:` numbering, grounding
#
# **Learning objectives.** After this notebook you can
# 1. say how Qwen-Audio-Chat sees a conversation (ChatML, every turn and every audio of the history in
#    one prompt, every audio encoded again at every turn);
# 2. compare how the official builder numbers the audios (`Audio 1:` restarts in every message) with the
#    alternatives the paper and the SFT data suggest;
# 3. read a grounding answer (`starts at <|1.63|> seconds and ends at <|2.26|> seconds`: time tokens
#    inside the text) and check it against the spectrogram.
#
# **Run time**: about 1 minute on 2 CPU cores with nano. Configuration from the environment:
# `WORKBENCH_MODEL` (a Qwen-Audio-Chat checkpoint directory), `WORKBENCH_DEVICE`, `WORKBENCH_DTYPE`,
# `WORKBENCH_DATA` (a folder holding `LibriSpeech/` and `clotho/` as distributed, for a speech clip and a
# sound clip); without it, the replicas are written to a temporary folder. Cells marked **real model
# only** skip on nano.

# %%
# %matplotlib inline
import os
import re
import tempfile
from pathlib import Path

import pandas as pd
import soundfile
from IPython.display import Audio, display

import workbench as wb
from workbench.chat import Chat
from workbench.evaluation.readers import read_dataset
from workbench.evaluation.replicas import synthetic_item
from workbench.evaluation.walkthrough import prepare_data
from workbench.figures.style import save_notebook_figure
from workbench.figures.tasks import plot_spans_on_mel

wb.figures.use_style()
pd.set_option("display.max_colwidth", 120)

MODEL = os.environ.get("WORKBENCH_MODEL", "nano")       # "nano", or a Qwen-Audio-Chat checkpoint directory
DEVICE = os.environ.get("WORKBENCH_DEVICE", "cpu")      # "cuda" on a GPU
DTYPE = os.environ.get("WORKBENCH_DTYPE", "float32")    # "bfloat16" for the 8.4 B model
DATA = os.environ.get("WORKBENCH_DATA")                 # a folder with LibriSpeech/ and clotho/; None: replicas
REAL_CLIPS = Path("../../shared/audio")                  # real clips (LibriSpeech 1272-128104-0000…), when present
TIME = re.compile(r"<\|(\d+\.\d+)\|>")                  # a time token inside a reply

# %% [markdown]
# ## 1 · The clips and the model
# A speech clip and a sound clip from the datasets (or their replicas), and a conversation of nano's
# held-out chat split whose word times are exact: a grounding question about it has a true answer.
# nano was fine-tuned on ChatML after its tag pretraining, as Qwen-Audio-Chat was; `chat=True` loads it
# as the chat model.

# %%
data, _ = prepare_data(DATA, items_per_dataset=2, real_clips=REAL_CLIPS)
speech = read_dataset("librispeech", data / "LibriSpeech", split="dev-clean")
sound = read_dataset("clotho", data / "clotho")[0]
grounding = next(item for index in range(60)
                 if (item := synthetic_item("chat", index)).fields["chat_type"] == "grounding")
clips = Path(tempfile.mkdtemp(prefix="wb_chat_"))
soundfile.write(clips / "grounding.wav", grounding.audios[0], 16000)      # Chat takes audio files
soundfile.write(clips / "sound.wav", wb.load_audio(sound.audio), 16000)
model = wb.load(MODEL, device=DEVICE, dtype=DTYPE, chat=True)
print(model)
print("sentence:", " ".join(w["word"] for w in grounding.fields["words"]))
display(Audio(grounding.audios[0], rate=16000))

# %% [markdown]
# ## 2 · A conversation
# Three turns: transcribe, ground a phrase (the question nano's chat data asks), then a second recording
# with a comparison question. `Chat.ask` takes a string, or the official list format
# `[{"audio": PATH}, {"text": "…"}]`.

# %%
question = grounding.turns[-1].text          # 'Find the start time and end time of the word "…"'
phrase = re.search(r'"(.+)"', question).group(1)
chat = Chat(model, audio_dir=clips)
replies = [chat.ask([{"audio": "grounding.wav"}, {"text": "what does the person say?"}]),
           chat.ask(question),
           chat.ask([{"audio": "sound.wav"}, {"text": "what is the difference of the two recordings?"}])]
pd.DataFrame([{"turn": k + 1, "query": turn.query, "reply": turn.response, "prompt tokens": len(turn.input_ids),
               "audios in the prompt": len(turn.audio_span_tokens)} for k, turn in enumerate(chat.turns)])

# %% [markdown]
# Every turn's prompt holds the whole history, and **every audio of the history is encoded again**
# (the official `chat()` keeps no audio cache): the last column grows. Here is the third turn's prompt as
# the model reads it — note `Audio 1:` in the third message although it is the conversation's second
# recording:

# %%
print(chat.turns[-1].raw_text)

# %% [markdown]
# ## 3 · `Audio N:` numbering, three ways
# The official `from_list_format` numbers audios *within one message* and writes no space after the
# colon; the SFT samples write a space; the paper says the id follows the audio's order *in the
# dialogue*. The workbench reproduces the official builder by default and makes both choices options.
# The same third message, built each way (nothing is generated here):

# %%
message = [{"audio": "sound.wav"}, {"text": "what is the difference of the two recordings?"}]
history = chat.history[:2]
builds = {"official (per message, no space)": {},
          "SFT data (space after the colon)": {"space_after_colon": True},
          "paper (numbered across the conversation)": {"numbering": "conversation"}}
pd.DataFrame([{"builder": name, "message": Chat(model, audio_dir=clips, history=history, **options).query_text(message)}
              for name, options in builds.items()])

# %% [markdown]
# **A format probe** (the chat counterpart of a tag probe): ask the third turn under each numbering and
# see whether the reply moves. A model fine-tuned on one format can be surprisingly sensitive to another.

# %%
probe = []
for name, options in builds.items():
    other = Chat(model, audio_dir=clips, history=history, **options)
    probe.append({"builder": name, "reply": other.ask(message)})
pd.DataFrame(probe).assign(moved=lambda frame: frame["reply"] != replies[2])

# %% [markdown]
# ## 4 · A grounding answer on the mel
# The reply to turn 2 carries its times as time tokens. Read them off, and draw them under the clip's
# log-mel beside the true word times (nano's chat data asks for one or two words).

# %%
said = [float(t) for t in TIME.findall(replies[1])]
truth = [float(t) for t in TIME.findall(grounding.turns[-1].answer)]
print(f"asked: {phrase!r}\nreply: {replies[1]}\ntruth: {grounding.turns[-1].answer}")
rows = {"words (truth)": [(w["word"], w["start"], w["end"]) for w in grounding.fields["words"]],
        f"“{phrase}” (truth)": [(phrase, *truth[:2])]}
if len(said) >= 2:
    rows[f"{Path(MODEL).name}'s answer"] = [(re.search(r'"(.+?)"', replies[1]).group(1) if '"' in replies[1] else "?", *said[:2])]
display(save_notebook_figure(plot_spans_on_mel(wb.log_mel(grounding.audios[0]), rows,
                                               seconds=len(grounding.audios[0]) / 16000,
                                               title=f"grounding “{phrase}”: truth and {Path(MODEL).name}"),
                             "grounding_on_mel"))
display(Audio(grounding.audios[0], rate=16000))

# %%
if len(said) >= 2:
    print(f"start off by {1000 * (said[0] - truth[0]):+.0f} ms, end by {1000 * (said[1] - truth[1]):+.0f} ms "
          f"(|Δstart| + |Δend| = {1000 * (abs(said[0] - truth[0]) + abs(said[1] - truth[1])):.0f} ms)")
else:
    print("the reply holds no pair of time tokens")

# %% [markdown]
# ## 5 · What nano can and cannot do
# nano's chat data is a handful of templates over its synthetic world: transcripts ("The person says:
# …"), grounding one or two words, captions, "The speaker sounds …", the language spoken, and two-clip
# comparisons. Read the replies above for how much survives: the *form* of its training answers mostly
# does; the content much less. A transcript cut short, another word grounded than the one asked, or
# times that run backwards are failures, and a model this small saw few conversations of more than two
# turns. On a real recording it can only answer from its grammar. The first speech clip of the data, in
# a fresh chat:

# %%
first = speech[0]
fresh = Chat(model)
print(f"{first.id}: {first.reference}")
print("reply:", fresh.ask([{"audio": str(first.audio)}, {"text": "what does the person say?"}], max_new_tokens=60))
display(Audio(wb.load_audio(first.audio), rate=16000))

# %% [markdown]
# ## 6 · Real model only
# Qwen-Audio-Chat grounds "middle classes" in LibriSpeech 1272-128104-0000 at 2.33–3.26 s (official
# README). With a real chat checkpoint, ask it and draw both on the mel. Skipped on nano.

# %%
clip = REAL_CLIPS / "1272-128104-0000.flac"
if MODEL != "nano" and clip.is_file():      # real model only
    real = Chat(model)
    real.ask([{"audio": str(clip)}, {"text": "what does the person say?"}])
    reply = real.ask('Find the start time and end time of the word "middle classes"')
    times = [float(t) for t in TIME.findall(reply)]
    print(reply)
    audio = wb.load_audio(clip)
    rows = {"README": [("middle classes", 2.33, 3.26)]}
    if len(times) >= 2:
        rows[Path(MODEL).name] = [("middle classes", *times[:2])]
    display(plot_spans_on_mel(wb.log_mel(audio), rows, seconds=len(audio) / 16000))
    display(Audio(audio, rate=16000))
else:
    print("skipped: needs a real Qwen-Audio-Chat checkpoint (WORKBENCH_MODEL) and ../shared/audio")

# %% [markdown]
# ## Exercise
# Does the transcript turn help grounding? Ask the grounding question in a **fresh** chat, as the only
# turn, and compare its |Δstart| + |Δend| with the two-turn conversation's above.

# %%
# Solution
alone = Chat(model, audio_dir=clips).ask([{"audio": "grounding.wav"}, {"text": question}])
times = [float(t) for t in TIME.findall(alone)]
print(alone)
print("single turn:", f"{1000 * (abs(times[0] - truth[0]) + abs(times[1] - truth[1])):.0f} ms" if len(times) >= 2
      else "no pair of time tokens", "| after a transcript turn:",
      f"{1000 * (abs(said[0] - truth[0]) + abs(said[1] - truth[1])):.0f} ms" if len(said) >= 2 else "no pair")
