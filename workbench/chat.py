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
3. every audio still in the prompt is decoded, and its embeddings are taken from the chat's
   `AudioCache` when an earlier turn encoded the same samples: turn n runs the encoder over its new
   clips only. The official chat keeps no cache and encodes the clips of turns 1…n again at every
   turn; with per-clip encoding (the model's default `audio_batching="separate"`) an audio's
   embeddings depend on its own samples only, so the cached ones are bit-identical to re-encoded
   ones and the chat computes the same numbers (tests/test_chat.py). With `audio_batching="official"`
   the clips of a prompt are encoded as one batch and influence each other (a shorter clip reads
   the padding of the longest): an embedding then depends on the other clips of the turn, a cache
   cannot be exact, and the chat re-encodes everything as the official code does (it warns once,
   and `audio_cache` is None with the reason in `audio_cache_note`). `cache_audio=False` re-encodes too;
4. with the audio cache, the LLM's keys and values of the previous turn are reused (`workbench.chat_kv`,
   `reuse_kv=True`): turn n runs the LLM on the positions after the previous prompt only, and falls
   back to the full pass when the prompt does not extend it (history dropped, `reset()`). Equal to the
   full pass up to float rounding (the same ids in the tests, logits within ~1e-5), not bit for bit;
   `reuse_kv=False` or `cache_audio=False` runs the official full pass every turn;
5. greedy decoding until `<|im_end|>`, `<|im_start|>` or `<|endoftext|>` (the official chat samples
   with top_p 0.5 by default; its evaluation and the golden fixtures decode greedily);
6. the response is post-processed as the official `decode_tokens` does for ChatML (see `response_text`),
   and (query, response) is appended to the history.

The native model equals the official one up to 2048 positions (`ContextTooLongError` beyond), so a
conversation ends there, well before the 6144-token window.

Grounding answers ("starts at <|2.33|> seconds and ends at <|3.26|> seconds") are read into
`workbench.tags.Segment`s by `workbench.tags.grounding_segments`; `grounding_clips` cuts those
segments out of the clip (and writes them as WAV files when given a folder), and
`workbench.figures.tasks.plot_grounding` draws them on the clip's log-mel.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import soundfile
import torch

from workbench.analysis.capabilities import require
from workbench.audio import MIN_SAMPLES, SAMPLE_RATE, audio_span_tokens, load_audio, log_mel
from workbench.audio_checks import check_min_length
from workbench.chat_kv import KVReuse, unsupported
from workbench.errors import ChatInputError
from workbench.models.base import AudioLM, AudioSpan, Generation, ModelInputs
from workbench.tags import Segment, grounding_segments
from workbench.tokenizer import DEFAULT_SYSTEM, MAX_WINDOW, QwenAudioTokenizer, audio_refs, from_list_format

__all__ = ["AudioCache", "Chat", "ChatInputError", "ChatTurn", "grounding_clips", "response_text"]

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
    audios_encoded: int = 0               # clips run through the encoder for this turn (the rest were cached)
    kv_reused: int = 0                    # prompt positions whose keys and values came from the previous turn:
                                          # the LLM ran len(input_ids) - kv_reused prompt positions


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


class AudioCache:
    """Audio embeddings by clip content, for one model: an audio the conversation already encoded is
    looked up, not encoded again.

    The key is the sha256 of the decoded float32 samples (so a file read with other audio options,
    e.g. another decoder, is another clip) and the encoder's settings: its config, the model's
    `audio_batching`, dtype, device, and the version counters of its weights (an in-place edit of a
    weight, e.g. `load_state_dict`, makes every entry stale). Forward hooks put on the encoder are not
    seen: call `clear()` after adding or removing one. Only per-clip encoding can be cached exactly;
    `Chat` does not use a cache with `audio_batching="official"`.
    """

    def __init__(self, model: AudioLM):
        self.model = model
        self._embeds: dict[tuple[str, tuple], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._embeds)

    def clear(self) -> None:
        self._embeds.clear()

    def settings(self) -> tuple:
        """What the embeddings depend on besides the samples."""
        encoder = self.model.encoder
        weights = list(encoder.parameters()) + list(encoder.buffers())
        # `_version` counts in-place writes to a tensor: cheap to read, and it moves on any weight edit.
        return (encoder.config, self.model.audio_batching, str(weights[0].dtype), str(weights[0].device),
                id(encoder), sum(w._version for w in weights))

    def key(self, clip: np.ndarray) -> tuple[str, tuple]:
        samples = np.ascontiguousarray(clip, dtype=np.float32)
        return hashlib.sha256(samples.tobytes()).hexdigest(), self.settings()

    def get(self, clip: np.ndarray) -> torch.Tensor | None:
        """The cached embeddings of `clip` (n_positions, d), or None."""
        return self._embeds.get(self.key(clip))

    @torch.no_grad()
    def embeds(self, inputs: ModelInputs, clips: Sequence[np.ndarray]) -> tuple[list[torch.Tensor], int]:
        """Per audio of `inputs` (whose spans need no mel), its embeddings, and how many clips were
        encoded. Only the clips of this prompt stay cached: a turn dropped from the window never
        comes back, and a clip asked about again later is encoded again."""
        keys = [self.key(clip) for clip in clips]
        new = {key: i for i, key in reversed(list(enumerate(keys))) if key not in self._embeds}
        if new:
            mels = log_mel([clips[i] for i in new.values()])   # per clip, as if each were computed alone
            spans = [replace(inputs.audios[i], mel=mel) for i, mel in zip(new.values(), mels)]
            # separate batching: each clip runs through the encoder on its own, as the full prompt would
            encoded = self.model.adapter.splice.encode_audio(replace(inputs, audios=spans))
            self._embeds.update(zip(new, encoded))
        self._embeds = {key: self._embeds[key] for key in keys}
        return [self._embeds[key] for key in keys], len(new)


def grounding_clips(answer: str | Sequence[Segment], audio: Any, folder: str | Path | None = None, *,
                    stem: str = "segment") -> list[np.ndarray]:
    """The segments of a grounding answer (its text, or `grounding_segments` of it) cut out of
    `audio` (16 kHz samples, or a path read by `load_audio`); with `folder`, each is also written as
    `{stem}_{k}.wav` (16 kHz float WAV, k from 1). A segment that runs backwards or past the clip is
    an error (`Segment.cut`), nothing is clipped silently."""
    segments = grounding_segments(answer) if isinstance(answer, str) else list(answer)
    samples = load_audio(audio) if isinstance(audio, (str, Path)) else np.asarray(audio, dtype=np.float32)
    clips = [segment.cut(samples) for segment in segments]
    if folder is not None:
        folder = Path(folder).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        for k, clip in enumerate(clips, start=1):
            soundfile.write(folder / f"{stem}_{k}.wav", clip, SAMPLE_RATE, subtype="FLOAT")
    return clips


class Chat:
    """A conversation with a Qwen-Audio(-Chat) model; `history` is what the official `chat()` keeps.

    system: the system message. numbering: "per_message" (official: `Audio 1:` restarts in every
    message) or "conversation" (audios numbered across the dialogue, as the paper describes).
    space_after_colon: `Audio 1: <audio>` (the SFT data) instead of `Audio 1:<audio>` (the builder).
    audio_dir: the folder relative audio paths are read from (default: the working directory).
    history: earlier (query, response) pairs to continue from. max_window: history budget in tokens.
    cache_audio: keep the audio embeddings of earlier turns (`AudioCache`) so a turn encodes its new
    clips only; exact with per-clip encoding, and off (re-encoding, with a warning) when the model
    encodes a prompt's clips as one batch (`audio_batching="official"`). `audio_cache_note` says why
    a chat re-encodes.
    reuse_kv: keep the LLM's keys and values between turns (`workbench.chat_kv.KVReuse`), so a turn runs the
    LLM on its new positions only; needs the audio cache (held keys of an audio are only valid for the same
    embeddings) and a family with a splice and fixed rotary phases. `kv_cache` is None when off, with the
    reason in `kv_note`.
    """

    def __init__(self, model: AudioLM, system: str = DEFAULT_SYSTEM, *, numbering: str = "per_message",
                 space_after_colon: bool = False, audio_dir: str | Path | None = None,
                 history: Sequence[tuple[str, str]] = (), max_window: int = MAX_WINDOW, cache_audio: bool = True,
                 reuse_kv: bool = True):
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
        self.audio_cache: AudioCache | None = None
        self.audio_cache_note = "cache_audio=False: every turn encodes every clip again, as the official chat()"
        if cache_audio and getattr(model, "audio_batching", None) == "official":
            self.audio_cache_note = ("the model encodes the clips of a prompt as one batch (audio_batching="
                                     "'official'), where each clip's embeddings depend on the others: cached "
                                     "embeddings would differ from the official ones, so every turn encodes every "
                                     "clip again; load with audio_batching='separate' to cache them exactly")
            warnings.warn(f"Chat does not cache audio: {self.audio_cache_note}", UserWarning, stacklevel=2)
        elif cache_audio:
            self.audio_cache = AudioCache(model)
            self.audio_cache_note = "per-clip encoding: each turn encodes its new clips only (exact)"
        self.kv_cache: KVReuse | None = None
        reason = unsupported(model) if reuse_kv and self.audio_cache is not None else None
        if not reuse_kv or self.audio_cache is None:
            # without the audio cache a chat is the official computation, and so is every LLM pass
            why = "reuse_kv=False" if not reuse_kv else "no audio cache (held keys of an audio need its exact embeddings)"
            self.kv_note = f"{why}: every turn runs the LLM over the whole prompt"
        elif reason is not None:
            self.kv_note = reason
        else:
            self.kv_cache = KVReuse(model)
            self.kv_note = "each turn runs the LLM on the positions after the previous turn's prompt"

    @property
    def history(self) -> list[tuple[str, str]]:
        """(query, response) pairs, oldest first (a copy: changing it does not change the chat)."""
        return list(self._history)

    def reset(self) -> None:
        """Forget the conversation (history and turns); the model and options stay."""
        self._history.clear()
        self.turns.clear()
        if self.audio_cache is not None:
            self.audio_cache.clear()
        if self.kv_cache is not None:
            self.kv_cache.clear()

    def ask(self, query: str | Sequence[Mapping[str, str | Path]], *, max_new_tokens: int = 512) -> str:
        """Send one message; returns the response and appends (query, response) to the history."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r}: give a positive int")
        text = self.query_text(query)
        tokenizer = self.model.adapter.chat
        refs = self._conversation_refs(text)
        samples = [self._read(ref) for ref in refs]
        for ref, clip in zip(refs, samples):
            check_min_length(len(clip), MIN_SAMPLES, f"audio {ref!r}", "Qwen-Audio")
        spans = [audio_span_tokens(len(clip)) for clip in samples]
        context = tokenizer.chat_context(text, self._history, self.system, spans, self.max_window)
        kept = self._kept(samples, context.dropped_turns)
        reused = 0
        if self.audio_cache is None:
            generation = self.model.generate(self._inputs(context.raw_text, context.ids, kept),
                                             max_new_tokens=max_new_tokens)
            encoded = len(kept)
        else:
            generation, encoded, reused = self._generate_cached(context, kept, max_new_tokens)
        response = response_text(tokenizer, generation)
        self.turns.append(ChatTurn(
            query=text, raw_text=context.raw_text, input_ids=tuple(context.ids),
            audio_span_tokens=tuple(context.audio_span_tokens), generated_ids=tuple(generation.ids),
            stop_token=generation.stop_token, response=response, dropped_turns=context.dropped_turns,
            audios_encoded=encoded, kv_reused=reused))
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

    @torch.no_grad()
    def _generate_cached(self, context: Any, clips: list[np.ndarray],
                         max_new_tokens: int) -> tuple[Generation, int, int]:
        """Greedy decoding on make_context's ids with the audio from the cache (new clips encoded):
        the same embeddings, spliced and decoded by the same code as `model.generate`; with `kv_cache`,
        from the previous turn's keys and values. Returns the generation, the clips encoded and the
        prompt positions reused."""
        start_id = self.model.tokenizer.audio_start_id
        starts = [i for i, token in enumerate(context.ids) if token == start_id]
        spans = [AudioSpan(source=ref, n_samples=len(clip), start=start, n_positions=n)
                 for ref, clip, start, n in zip(context.audio_refs, clips, starts, context.audio_span_tokens,
                                                strict=True)]
        inputs = ModelInputs(text=context.raw_text, input_ids=torch.tensor([context.ids]), audios=spans)
        embeds, encoded = self.audio_cache.embeds(inputs, clips)
        stops = self.model.stop_ids(inputs)
        kv = self.kv_cache
        # Past the family's position limit the full path raises its error (ContextTooLongError for
        # Qwen-Audio, whose official NTK/logn scaling would start there): the held keys stay as they are.
        if kv is not None and inputs.length + max_new_tokens - 1 <= self.model.adapter.splice.max_positions:
            ids = kv.greedy(inputs, embeds, [self.audio_cache.key(clip) for clip in clips], stops, max_new_tokens)
            reused = kv.reused
        else:
            ids, reused = self.model.adapter.interventions.greedy(inputs, embeds, max_new_tokens), 0
        stop = ids[-1] if ids and ids[-1] in stops else None
        ids = ids[:-1] if stop is not None else ids
        generation = Generation(ids=ids, text=self.model.decode(ids), prompt_length=inputs.length, stop_token=stop)
        return generation, encoded, reused


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
