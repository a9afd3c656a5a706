"""The Qwen-Audio tokenizer: tiktoken BPE, `<audio>` span expansion, and ChatML.

Text → ids exactly as the official `QWenTokenizer` (NFC, tiktoken with Qwen's split pattern,
every special token allowed in text); `encode_with_audio` then turns each
`<audio>PATH</audio>` into `<audio>` + (span − 2) × `[[[AUDIO:modality]]]` + `</audio>`, the
positions whose hidden states the model overwrites with the audio encoder's output.

Any number of BPE ranks: the special tokens are numbered after the ranks, in the official order,
so Qwen's 151,643 ranks give the published ids (`<|endoftext|>` 151643, `<audio>` 155163) and a
smaller ranks file (the nano model's) gives the same strings at smaller ids. Read the ids off the
tokenizer (`tok.audio_start_id`, `tok.special_id("<|en|>")`), not off `workbench.tags`' constants,
whenever the model may be other than the published one.
For Qwen-Audio-Chat, `chat_context` rebuilds the official `make_context` (history window included)
and `from_list_format` the official `Audio 1:<audio>PATH</audio>\\n` builder.
"""
from __future__ import annotations

import base64
import operator
import re
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import tiktoken

from workbench.errors import AudioTagError
from workbench.tags import IM_END_ID, IM_START_ID, N_BPE_RANKS, SPECIAL_TOKENS, check_tags

TIKTOKEN_FILE = "qwen.tiktoken"
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
DEFAULT_SYSTEM = "You are a helpful assistant."
MAX_WINDOW = 6144  # make_context drops the oldest history turns beyond this many tokens
MAX_AUDIO_SPAN = 752  # a 30 s clip: 750 audio tokens + bos/eos; the official code cuts longer audio

# make_context encodes message contents with only the audio vocabulary allowed as special tokens,
# so a user typing "<|im_end|>" cannot close the turn; the control tokens are inserted by id.
_CONTENT_SPECIALS = frozenset(t.text for t in SPECIAL_TOKENS if t.kind not in ("special", "chat", "extra"))


def audio_refs(text: str) -> list[str]:
    """The strings between each `<audio>` and `</audio>` (file paths or URLs), in order."""
    refs, opened_at = [], None
    for match in re.finditer(r"</?audio>", text):
        if match.group() == "<audio>":
            if opened_at is not None:
                raise AudioTagError(f"nested <audio> at character {match.start()}: the <audio> at character "
                                    f"{opened_at} ({_around(text, opened_at)}) is not closed yet; "
                                    "close each audio with </audio> before the next")
            opened_at = match.end()
        else:
            if opened_at is None:
                raise AudioTagError(f"</audio> at character {match.start()} ({_around(text, match.start())}) "
                                    "has no <audio> before it")
            refs.append(text[opened_at:match.start()])
            opened_at = None
    if opened_at is not None:
        raise AudioTagError(f"<audio> at character {opened_at - len('<audio>')} ({_around(text, opened_at)}) "
                            "has no </audio>: write <audio>PATH</audio>")
    return refs


def _around(text: str, position: int, width: int = 20) -> str:
    return repr(text[max(0, position - width):position + width])


def from_list_format(items: Sequence[Mapping[str, str]], numbering: str = "per_message",
                     space_after_colon: bool = False, start_index: int = 1,
                     history: Sequence[tuple[str, str | None]] = ()) -> str:
    """Build a query from `[{"audio": PATH}, {"text": "…"}]` as the official builder does:
    `Audio 1:<audio>PATH</audio>\\n`, numbering restarting at `start_index` in every message.

    numbering="conversation" continues counting after the audios already in `history`
    (what the paper describes); space_after_colon=True writes `Audio 1: <audio>` (the SFT data).
    """
    if numbering not in ("per_message", "conversation"):
        raise ValueError(f"numbering={numbering!r}; use 'per_message' (official) or 'conversation'")
    number = start_index
    if numbering == "conversation":
        number += sum(len(audio_refs(q)) + len(audio_refs(r or "")) for q, r in history)
    text = ""
    for item in items:
        if not isinstance(item, Mapping) or len(item) != 1 or not set(item) <= {"audio", "text"}:
            raise ValueError(f"list item {item!r}: each item must be {{'audio': PATH}} or {{'text': TEXT}}")
        if "audio" in item:
            text += f"Audio {number}:{' ' if space_after_colon else ''}<audio>{item['audio']}</audio>\n"
            number += 1
        else:
            text += item["text"]
    return text


@dataclass(frozen=True)
class ChatContext:
    raw_text: str  # the whole ChatML prompt, as make_context returns it
    ids: list[int]  # the ids make_context builds (audio spans expanded)
    audio_refs: tuple[str, ...]  # the audios left in the prompt, in order
    audio_span_tokens: tuple[int, ...]  # their spans, aligned with audio_refs
    dropped_turns: int  # oldest history turns that did not fit in max_window


class QwenAudioTokenizer:
    """A tiktoken BPE (Qwen's: 151,643 ranks) plus the 3,522 special tokens of `workbench.tags`,
    numbered from the number of ranks on (module docstring)."""

    def __init__(self, mergeable_ranks: dict[bytes, int]):
        n_ranks = len(mergeable_ranks)
        single_bytes = sum(1 for token in mergeable_ranks if len(token) == 1)
        if sorted(mergeable_ranks.values()) != list(range(n_ranks)) or single_bytes != 256:
            raise ValueError(f"the BPE file has {n_ranks} ranks (largest {max(mergeable_ranks.values(), default=-1)}, "
                             f"{single_bytes} of the 256 single bytes); the Qwen vocabulary has {N_BPE_RANKS} "
                             f"(0…{N_BPE_RANKS - 1}): use the qwen.tiktoken of a Qwen-Audio checkpoint, or a ranks "
                             "file numbered 0…n-1 that holds every single byte (so that any text encodes)")
        self.n_ranks = n_ranks
        self.special_tokens = {t.text: n_ranks + t.id - N_BPE_RANKS for t in SPECIAL_TOKENS}
        self.encoding = tiktoken.Encoding("qwen_audio", pat_str=SPLIT_PATTERN,
                                          mergeable_ranks=mergeable_ranks, special_tokens=self.special_tokens)
        self._special_text = {i: text for text, i in self.special_tokens.items()}
        # The ids the model code needs; equal to workbench.tags' constants for Qwen's own ranks.
        self.endoftext_id = self.special_id("<|endoftext|>")
        self.im_start_id = self.special_id("<|im_start|>")
        self.im_end_id = self.special_id("<|im_end|>")
        self.audio_pad_id = self.special_id("[[[AUDIO:modality]]]")
        self.audio_start_id = self.special_id("<audio>")
        self.audio_end_id = self.special_id("</audio>")
        self.time_zero_id = self.special_id("<|0.00|>")

    def special_id(self, text: str) -> int:
        """This tokenizer's id of one special token, e.g. `special_id("<|en|>")` (151859 for Qwen's ranks)."""
        if text not in self.special_tokens:
            raise KeyError(f"{text!r} is not a Qwen-Audio special token; see workbench.tags.SPECIAL_TOKENS")
        return self.special_tokens[text]

    @classmethod
    def from_dir(cls, path: str | Path) -> QwenAudioTokenizer:
        """Read `qwen.tiktoken` (one `base64-token rank` a line) from a checkpoint directory."""
        path = Path(path)
        file = path if path.is_file() else path / TIKTOKEN_FILE
        if not file.is_file():
            raise FileNotFoundError(f"no {TIKTOKEN_FILE} in {path}: expected the checkpoint directory of "
                                    f"Qwen-Audio / Qwen-Audio-Chat, which holds {TIKTOKEN_FILE} "
                                    "(base64 token and rank per line) next to config.json")
        # Parsed here rather than by tiktoken.load, which copies local files into a temp-dir cache.
        ranks = {}
        for number, line in enumerate(file.read_bytes().splitlines(), start=1):
            if line.strip():
                try:
                    token, rank = line.split()
                    ranks[base64.b64decode(token, validate=True)] = int(rank)
                except ValueError as error:
                    raise ValueError(f"{file} line {number} is {line[:60]!r}, not 'BASE64TOKEN RANK' "
                                     f"({error}): the file is not a tiktoken BPE file") from None
        return cls(ranks)

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab  # 155165 for Qwen's ranks

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"QwenAudioTokenizer(vocab_size={self.vocab_size})"

    # -- text ⇄ ids -----------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Text → ids with every special tag recognised; `<audio>PATH</audio>` keeps the path as
        text tokens (use `encode_with_audio` for model input). Warns on unknown `<|…|>` tags."""
        return self._encode(text, allowed_special="all")

    def _encode(self, text: str, allowed_special: str | frozenset[str]) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        check_tags(text, stacklevel=4)
        return self.encoding.encode(unicodedata.normalize("NFC", text), allowed_special=allowed_special,
                                    disallowed_special=())

    def decode(self, ids: Iterable[int], keep_tags: bool = True, unused: str = "error") -> str:
        """Ids → text; keep_tags=False drops every special token (tags, chat markers, audio pads),
        like the official `skip_special_tokens`. Broken UTF-8 becomes U+FFFD, as officially.

        unused: what to do with ids past the tokenizer — the embedding's padding rows, which a model
        can still emit (an untrained one often does): "error" (as the official tokenizer), or
        "mark" to show each as `<unused id N>` (a tag of sorts: dropped when keep_tags=False)."""
        if unused not in ("error", "mark"):
            raise ValueError(f"unused={unused!r}: choose 'error' or 'mark'")
        if unused == "mark":
            ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
            cut = [n for n, i in enumerate(ids) if isinstance(i, int) and i >= self.vocab_size]
            if cut:
                pieces, start = [], 0
                for n in cut:
                    pieces += [self.decode(ids[start:n], keep_tags), f"<unused id {ids[n]}>" if keep_tags else ""]
                    start = n + 1
                return "".join(pieces + [self.decode(ids[start:], keep_tags)])
        ids = self._checked_ids(ids)
        if not keep_tags:
            ids = [i for i in ids if i < self.endoftext_id]
        return self.encoding.decode(ids, errors="replace")

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        """The text of each token (tags verbatim); bytes that are not whole UTF-8 characters are
        shown as `\\xNN` so that no token's content is lost."""
        tokens = [self._special_text.get(i) or self.encoding.decode_single_token_bytes(i).decode(
            "utf-8", errors="backslashreplace") for i in self._checked_ids(ids)]
        return tokens[0] if isinstance(ids, int) or getattr(ids, "ndim", None) == 0 else tokens

    def _checked_ids(self, ids: Iterable[int]) -> list[int]:
        ids = ids.tolist() if hasattr(ids, "tolist") else ids  # numpy arrays, torch tensors
        try:
            ids = [operator.index(ids)] if not isinstance(ids, Iterable) else [operator.index(i) for i in ids]
        except TypeError:
            raise TypeError(f"ids must be one flat sequence of ints (not a batch, not text); got {ids!r:.80}") from None
        size = self.vocab_size
        bad = [i for i in ids if not 0 <= i < size]
        if bad:
            raise ValueError(f"id {bad[0]} is outside the tokenizer's 0…{size - 1}: the model's embedding may "
                             f"have more rows (Qwen-Audio's 155947) but ids ≥ {size} are padding without a token; "
                             f"mask logits[..., {size}:] before taking an argmax")
        return ids

    # -- audio spans ----------------------------------------------------------------------------
    audio_refs = staticmethod(audio_refs)
    from_list_format = staticmethod(from_list_format)

    def encode_with_audio(self, text: str, span_tokens: Sequence[int]) -> list[int]:
        """Encode, then replace each `<audio>PATH</audio>` by `<audio>` + (span − 2) audio pads +
        `</audio>`; `span_tokens[j]` is audio j's span (audio tokens + 2), as audio.py computes it."""
        return self._encode_with_audio(text, span_tokens, allowed_special="all")

    def _encode_with_audio(self, text: str, span_tokens: Sequence[int],
                           allowed_special: str | frozenset[str]) -> list[int]:
        refs = audio_refs(text)
        span_tokens = list(span_tokens)
        if len(refs) != len(span_tokens):
            raise AudioTagError(f"{'more' if len(refs) > len(span_tokens) else 'fewer'} audio tags than audios: "
                                f"the text has {len(refs)} <audio>…</audio> ({refs}) but {len(span_tokens)} "
                                "span lengths were given; pass one span per audio, in order")
        for span in span_tokens:
            if not isinstance(span, int) or isinstance(span, bool) or span < 2:
                raise AudioTagError(f"audio span {span!r} is not an int ≥ 2: a span counts the audio tokens "
                                    "plus the two bos/eos positions")
        ids, out, spans = self._encode(text, allowed_special), [], iter(span_tokens)
        position = 0
        while position < len(ids):
            if ids[position] == self.audio_start_id:
                end = ids.index(self.audio_end_id, position)
                out += [self.audio_start_id] + [self.audio_pad_id] * (next(spans) - 2) + [self.audio_end_id]
                position = end + 1
            else:
                out.append(ids[position])
                position += 1
        return out

    # -- ChatML (Qwen-Audio-Chat) ---------------------------------------------------------------
    def chat_context(self, query: str, history: Sequence[tuple[str, str | None]] = (),
                     system: str = DEFAULT_SYSTEM, audio_span_tokens: Sequence[int] = (),
                     max_window: int | None = MAX_WINDOW) -> ChatContext:
        """The official make_context: prompt text and ids, dropping the oldest history turns
        whose tokens would exceed `max_window` (None keeps all). `audio_span_tokens` lists every
        audio of the conversation in order (system, history turns, query), as the official code
        re-encodes history audio at every turn."""
        segments = _chat_segments(query, history, system)
        n_audios = sum(len(audio_refs(p)) for segment in segments for p in segment if isinstance(p, str))
        if len(audio_span_tokens) != n_audios:
            raise AudioTagError(f"the conversation has {n_audios} <audio>…</audio> but {len(audio_span_tokens)} "
                                "audio spans were given: pass one span per audio, in the order they appear "
                                "(system, history turns, query)")
        span_slices = _split_spans(segments, list(audio_span_tokens))
        encoded = [self._segment_ids(segment, spans) for segment, spans in zip(segments, span_slices)]
        first_kept = _first_kept_turn([len(ids) for ids in encoded], max_window)
        if first_kept > 1:
            warnings.warn(f"dropped the oldest {first_kept - 1} history turn(s): the conversation exceeds "
                          f"max_window={max_window} tokens (the official make_context does the same)", stacklevel=2)
        kept = [0, *range(first_kept, len(segments))]
        return ChatContext(
            raw_text="".join(_segment_text(segments[s]) for s in kept),
            ids=[i for s in kept for i in encoded[s]],
            audio_refs=tuple(ref for s in kept for part in segments[s] if isinstance(part, str)
                             for ref in audio_refs(part)),
            audio_span_tokens=tuple(span for s in kept for span in span_slices[s]),
            dropped_turns=first_kept - 1,
        )

    def chat_prompt(self, query: str, history: Sequence[tuple[str, str | None]] = (),
                    system: str = DEFAULT_SYSTEM, audio_span_tokens: Sequence[int] | None = None,
                    max_window: int | None = MAX_WINDOW) -> str:
        """The ChatML prompt text of make_context. Without `audio_span_tokens` every audio is
        counted at its longest (752) for the history window; if that could drop a turn, the
        real spans are needed and an error says so."""
        if audio_span_tokens is not None:
            return self.chat_context(query, history, system, audio_span_tokens, max_window).raw_text
        segments = _chat_segments(query, history, system)
        worst = _split_spans(segments, None)
        # Only history and system audio count towards the window; the query's never does.
        if any(worst[:-1]) and _first_kept_turn(
                [len(self._segment_ids(s, spans)) for s, spans in zip(segments, worst)], max_window) > 1:
            raise AudioTagError(f"the history may exceed max_window={max_window} tokens depending on the audio "
                                "lengths: pass audio_span_tokens (one per audio of the conversation)")
        return self.chat_context(query, history, system, [s for spans in worst for s in spans], max_window).raw_text

    def _segment_ids(self, segment: list[int | str], spans: list[int]) -> list[int]:
        ids = []
        for part in segment:
            if isinstance(part, int):   # a control token, named by its official id
                ids.append(self.special_id(_segment_text([part])))
            else:
                n = len(audio_refs(part))
                ids += self._encode_with_audio(part, spans[:n], allowed_special=_CONTENT_SPECIALS)
                spans = spans[n:]
        return ids


# A conversation as segments of parts: ints are control tokens inserted by id, strings are
# encoded one by one, exactly the pieces make_context concatenates. Segment 0 is the system
# message, then one segment per history turn, the last is the query and the assistant cue.
def _chat_segments(query: str, history: Sequence[tuple[str, str | None]], system: str) -> list[list[int | str]]:
    segments: list[list[int | str]] = [[IM_START_ID, "system", "\n", system, IM_END_ID]]
    for turn in history:
        if not (isinstance(turn, (tuple, list)) and len(turn) == 2):
            raise ValueError(f"history turn {turn!r} must be a (query, response) pair")
        turn_query, response = turn
        segment: list[int | str] = ["\n", IM_START_ID, "user", "\n", turn_query, IM_END_ID, "\n"]
        if response is not None:
            segment += [IM_START_ID, "assistant", "\n", response, IM_END_ID]
        segments.append(segment)
    segments.append(["\n", IM_START_ID, "user", "\n", query, IM_END_ID, "\n", IM_START_ID, "assistant", "\n"])
    return segments


def _segment_text(segment: list[int | str]) -> str:
    return "".join({IM_START_ID: "<|im_start|>", IM_END_ID: "<|im_end|>"}[p] if isinstance(p, int) else p
                   for p in segment)


def _split_spans(segments: list[list[int | str]], spans: list[int] | None) -> list[list[int]]:
    """Each segment's share of the conversation's spans (all MAX_AUDIO_SPAN when spans is None)."""
    shares = []
    for segment in segments:
        n = sum(len(audio_refs(p)) for p in segment if isinstance(p, str))
        shares.append([MAX_AUDIO_SPAN] * n if spans is None else spans[:n])
        spans = None if spans is None else spans[n:]
    return shares


def _first_kept_turn(lengths: list[int], max_window: int | None) -> int:
    """Index of the oldest history segment make_context keeps: it walks back from the newest
    turn and stops at the first that would bring system + kept turns to max_window or more."""
    first = len(lengths) - 1  # the query segment: no history kept yet
    if max_window is None:
        return 1
    total = lengths[0]
    while first > 1 and total + lengths[first - 1] < max_window:
        total += lengths[first - 1]
        first -= 1
    return first
