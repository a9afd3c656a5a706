"""The prompt of every corpus task: the official tag string, or ChatML for chat.

Tag prompts come from `workbench.tags` presets (the official eval_audio prompts), so the corpus
and the workbench can never disagree on a tag. Chat prompts follow the official Qwen-Audio-Chat
`make_context` and `from_list_format`: `Audio 1:<audio>PATH</audio>\\n` with the numbering
restarting in every message, and no space after the colon.
"""
from __future__ import annotations

from typing import Sequence

from workbench.tags import preset
from workbench.tokenizer import DEFAULT_SYSTEM, from_list_format

TASKS = ("asr", "s2tt", "aac", "asc", "ser", "aqa", "vsc", "mna", "srwt", "chat")
# Which official benchmark's prompt each task reproduces.
BENCHMARK = {"asr": "librispeech", "s2tt": "covost2", "aac": "clotho", "asc": "tut2017", "ser": "meld",
             "aqa": "clothoaqa", "vsc": "vocalsound", "mna": "nsynth", "srwt": "srwt"}
# What ends the target sequence in training: the base model stops at <|endoftext|>, chat at <|im_end|>.
STOP = {task: "<|endoftext|>" for task in BENCHMARK} | {"chat": "<|im_end|>"}


def task_prompt(task: str, **fields: str) -> str:
    """The tags that follow `<audio>PATH</audio>` for `task`, e.g. task_prompt("asr", lang="de").

    Fields: asr and srwt take `lang`, s2tt `src` and `tgt`, aqa `question`."""
    if task not in BENCHMARK:
        raise ValueError(f"task {task!r} has no tag prompt; tag tasks: {', '.join(BENCHMARK)} "
                         "(chat prompts are built with chat_prompt)")
    return preset(BENCHMARK[task], **fields).render()


def user_message(audio_paths: Sequence[str], text: str) -> str:
    """One user message in the official list format: every audio, then the text."""
    return from_list_format([*({"audio": path} for path in audio_paths), {"text": text}])


def chat_prompt(query: str, history: Sequence[tuple[str, str]] = (), system: str = DEFAULT_SYSTEM) -> str:
    """The ChatML text of make_context: system turn, history turns, the query, the assistant cue."""
    text = f"<|im_start|>system\n{system}<|im_end|>"
    for turn_query, response in history:
        text += f"\n<|im_start|>user\n{turn_query}<|im_end|>\n<|im_start|>assistant\n{response}<|im_end|>"
    return text + f"\n<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n"
