"""Multi-turn chat with Qwen-Audio-Chat, computed as the official `model.chat()` computes it.

    chat = Chat(model, audio_dir="clips")
    chat.ask([{"audio": "1272-128104-0000.flac"}, {"text": "what does the speaker say?"}])
    chat.ask("and in French?")

Each `ask`:
1. the query is a string, or items in the official list format, `[{"audio": PATH}, {"text": "…"}]`,
   joined by `from_list_format` into `Audio 1:<audio>PATH</audio>\\n…` (numbering restarts in every
   message and there is no space after the colon, as the official builder writes; both are options);
2. the ChatML prompt of the whole conversation is built by `tokenizer.chat_context`, the official
   `make_context`: system, history turns, query, `<|im_start|>assistant\\n`; the oldest turns are
   dropped when the history passes 6144 tokens (with a warning; the official code is silent);
3. every audio still in the prompt is decoded and encoded again, history included: the official
   chat keeps no audio cache, so turn n runs the encoder over all the clips of turns 1…n. That is
   slow on long conversations, but it is what the published model computes; with the model's
   `audio_batching="official"` the clips are even encoded as one batch and influence each other;
4. greedy decoding until `<|im_end|>`, `<|im_start|>` or `<|endoftext|>` (the official chat samples
   with top_p 0.5 by default; its evaluation and the golden fixtures decode greedily);
5. the response is post-processed as the official `decode_tokens` does for ChatML (see `response_text`),
   and (query, response) is appended to the history.

The native model equals the official one up to 2048 positions (`ContextTooLongError` beyond), so a
conversation ends there, well before the 6144-token window.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from workbench.analysis.capabilities import require
from workbench.audio import audio_span_tokens
from workbench.errors import ChatInputError
from workbench.models.base import AudioLM, Generation, ModelInputs
from workbench.tokenizer import DEFAULT_SYSTEM, MAX_WINDOW, QwenAudioTokenizer, audio_refs, from_list_format

__all__ = ["Chat", "ChatInputError", "ChatTurn", "response_text"]

NUMBERINGS = ("per_message", "conversation")
ITEM_KEYS = ("audio", "text")


@dataclass(frozen=True)
class ChatTurn:
    """One `ask`, as the model saw it."""

    query: str                            # the message text (list items joined by from_list_format)
    raw_text: str                         # the whole ChatML prompt (make_context's raw_text)
    input_ids: tuple[int, ...]            # the model's input ids (make_context's context_tokens)
    audio_span_tokens: tuple[int, ...]    # every audio in the prompt, history included, in order
    generated_ids: tuple[int, ...]        # new ids, stop token excluded
    stop_token: int | None                # None: max_new_tokens was reached
    response: str                         # after the official post-processing
    dropped_turns: int                    # oldest history turns left out of the 6144-token window


def response_text(tokenizer: QwenAudioTokenizer, generation: Generation) -> str:
    """The reply text as the official `decode_tokens(..., chat_format="chatml")` makes it.

    The official code cuts the generated ids at the first `<|im_start|>` or `<|im_end|>`. When
    there is none, its loop index is left on the *last* generated id, which is then cut too: a
    reply stopped by `<|endoftext|>` loses that token, and a reply stopped by max_new_tokens
    loses its last real token. The rest is decoded with special tokens kept as text (time tags
    of grounding answers survive), broken UTF-8 as U+FFFD, and stripped of surrounding whitespace.
    (The official code decodes prompt + reply and cuts off `len(raw_text)` characters; that is the
    reply alone as long as the prompt text is NFC-normalized, which the tokenizer applies anyway.)
    """
    # `generation.ids` already ends before the stop token, whichever it was (the official cut at
    # <|im_end|>/<|im_start|>, and its off-by-one at <|endoftext|>, give the same ids).
    ids = list(generation.ids) if generation.stop_token is not None else list(generation.ids[:-1])
    return tokenizer.decode(ids, keep_tags=True).strip()


class Chat:
    """A conversation with a Qwen-Audio(-Chat) model; `history` is what the official `chat()` keeps.

    system: the system message. numbering: "per_message" (official: `Audio 1:` restarts in every
    message) or "conversation" (audios numbered across the dialogue, as the paper describes).
    space_after_colon: `Audio 1: <audio>` (the SFT data) instead of `Audio 1:<audio>` (the builder).
    audio_dir: the folder relative audio paths are read from (default: the working directory).
    history: earlier (query, response) pairs to continue from. max_window: history budget in tokens.
    """

    def __init__(self, model: AudioLM, system: str = DEFAULT_SYSTEM, *, numbering: str = "per_message",
                 space_after_colon: bool = False, audio_dir: str | Path | None = None,
                 history: Sequence[tuple[str, str]] = (), max_window: int = MAX_WINDOW):
        require(model, "Chat")   # a family that writes the official ChatML context (Qwen-Audio)
        if model.family != "qwen-audio-chat":
            warnings.warn("this is the base Qwen-Audio, trained on tag prompts, not on ChatML: its replies to a "
                          "chat are not meaningful; load the Qwen-Audio-Chat checkpoint (or pass chat=True to "
                          "the loader to treat a checkpoint as the chat model)", UserWarning, stacklevel=2)
        if not isinstance(system, str):
            raise TypeError(f"system must be a str, not {type(system).__name__}")
        if numbering not in NUMBERINGS:
            raise ValueError(f"numbering={numbering!r}: choose 'per_message' (official) or 'conversation'")
        if isinstance(max_window, bool) or not isinstance(max_window, int) or max_window < 1:
            raise ValueError(f"max_window={max_window!r}: give a positive number of tokens (official: {MAX_WINDOW})")
        self.model, self.system, self.numbering = model, system, numbering
        self.space_after_colon, self.max_window = bool(space_after_colon), max_window
        self.audio_dir = None if audio_dir is None else Path(audio_dir).expanduser()
        self._history: list[tuple[str, str]] = [_checked_turn(turn) for turn in history]
        self.turns: list[ChatTurn] = []

    @property
    def history(self) -> list[tuple[str, str]]:
        """(query, response) pairs, oldest first (a copy: changing it does not change the chat)."""
        return list(self._history)

    def reset(self) -> None:
        """Forget the conversation (history and turns); the model and options stay."""
        self._history.clear()
        self.turns.clear()

    def ask(self, query: str | Sequence[Mapping[str, str | Path]], *, max_new_tokens: int = 512) -> str:
        """Send one message; returns the response and appends (query, response) to the history."""
        text = self.query_text(query)
        tokenizer = self.model.adapter.chat
        samples = [self._read(ref) for ref in self._conversation_refs(text)]
        spans = [audio_span_tokens(len(clip)) for clip in samples]
        context = tokenizer.chat_context(text, self._history, self.system, spans, self.max_window)
        kept = self._kept(samples, context.dropped_turns)
        inputs = self._inputs(context.raw_text, context.ids, kept)
        generation = self.model.generate(inputs, max_new_tokens=max_new_tokens)
        response = response_text(tokenizer, generation)
        self.turns.append(ChatTurn(
            query=text, raw_text=context.raw_text, input_ids=tuple(context.ids),
            audio_span_tokens=tuple(context.audio_span_tokens), generated_ids=tuple(generation.ids),
            stop_token=generation.stop_token, response=response, dropped_turns=context.dropped_turns))
        self._history.append((text, response))
        return response

    def query_text(self, query: str | Sequence[Mapping[str, str | Path]]) -> str:
        """The message text `ask` would send for `query` (list items joined as the official builder does)."""
        if isinstance(query, str):
            if not query.strip():
                raise ChatInputError("the query is empty: ask a question, or pass items such as "
                                     "[{'audio': 'clip.flac'}, {'text': 'what is this?'}]")
            return query
        if not isinstance(query, Sequence) or isinstance(query, bytes):
            raise TypeError(f"query must be a str or a list of {{'audio': PATH}} / {{'text': TEXT}} items, "
                            f"not {type(query).__name__}")
        if not query:
            raise ChatInputError("the query is an empty list: give at least one {'audio': PATH} or {'text': TEXT} item")
        items = [_checked_item(item, i) for i, item in enumerate(query)]
        if not any(key == "audio" or value.strip() for item in items for key, value in item.items()):
            raise ChatInputError("the query's items hold only empty text: add a question or an audio")
        return from_list_format(items, numbering=self.numbering, space_after_colon=self.space_after_colon,
                                history=self._history)

    # -- audio -----------------------------------------------------------------------------------
    def _conversation_refs(self, query: str) -> list[str]:
        """Every audio of the conversation in prompt order: system, history turns, the query."""
        texts = [self.system, *(text for turn in self._history for text in turn), query]
        return [ref for text in texts for ref in audio_refs(text)]

    def _read(self, ref: str) -> np.ndarray:
        path = Path(ref).expanduser()
        if not path.is_absolute():
            path = (self.audio_dir or Path.cwd()) / path
        if not path.is_file():
            raise FileNotFoundError(f"audio {ref!r} of the conversation resolves to {path}, which does not exist: "
                                    "pass Chat(..., audio_dir=FOLDER) (the folder the paths are relative to) "
                                    "or absolute paths")
        return self.model.read_audio(path)   # the model's audio options, and its advice when one fails

    def _kept(self, samples: list[np.ndarray], dropped_turns: int) -> list[np.ndarray]:
        """The clips of the system message and of the turns make_context kept (the oldest go first)."""
        in_system = len(audio_refs(self.system))
        in_dropped = sum(len(audio_refs(text)) for turn in self._history[:dropped_turns] for text in turn)
        return samples[:in_system] + samples[in_system + in_dropped:]

    def _inputs(self, raw_text: str, ids: list[int], clips: list[np.ndarray]) -> ModelInputs:
        """Model inputs on make_context's ids. The model's own tokenizing of raw_text differs only if
        a message contains a control token as text (make_context encodes those as plain text)."""
        built = self.model.inputs(raw_text, audio=clips)
        if built.input_ids[0].tolist() == ids:
            return built
        starts = [i for i, token in enumerate(ids) if token == self.model.tokenizer.audio_start_id]
        audios = [replace(audio, start=start) for audio, start in zip(built.audios, starts, strict=True)]
        return ModelInputs(text=raw_text, input_ids=torch.tensor([ids]), audios=audios)


def _checked_item(item: object, index: int) -> dict[str, str]:
    if not isinstance(item, Mapping) or len(item) != 1 or next(iter(item)) not in ITEM_KEYS:
        keys = list(item) if isinstance(item, Mapping) else type(item).__name__
        raise ChatInputError(f"query item {index} is {item!r} ({keys}): each item must be a dict with one key, "
                             "'audio' (a path) or 'text' (a string), e.g. [{'audio': 'clip.flac'}, "
                             "{'text': 'what is this?'}]")
    key, value = next(iter(item.items()))
    if key == "audio" and not isinstance(value, (str, Path)):
        raise ChatInputError(f"query item {index}: audio must be a file path (str or Path), not "
                             f"{type(value).__name__}; arrays have no path to write into the prompt")
    if key == "text" and not isinstance(value, str):
        raise ChatInputError(f"query item {index}: text must be a str, not {type(value).__name__}")
    return {key: str(value)}


def _checked_turn(turn: object) -> tuple[str, str]:
    if not (isinstance(turn, (tuple, list)) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
        raise ChatInputError(f"history turn {turn!r}: each turn must be a (query, response) pair of strings")
    return turn[0], turn[1]
