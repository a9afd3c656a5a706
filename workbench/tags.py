"""Qwen-Audio's special vocabulary and the hierarchical tag prompt.

The base model is steered by a fixed sequence of tags after the audio:
start · audio language · task · text language · timestamps · output instruction(s), e.g.
`<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>`.
This module holds the vocabulary as data (ids in the official order), `TagPrompt` (one value
per slot, rendered and parsed exactly), the official benchmark presets, and the variant
generators that tag ablation iterates over.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import itertools
import re
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

from workbench.errors import TagPromptError, UnknownTagWarning

# ---------------------------------------------------------------------------------------------
# The vocabulary, in official id order (tokenization_qwen.py: SPECIAL_TOKENS + AUDIO_ST).
# Ids are positions in this list after the 151,643 BPE ranks of qwen.tiktoken, so the order
# *is* the id assignment: never sort or deduplicate it.
N_BPE_RANKS = 151_643

LANGUAGES = ("en", "zh", "de", "es", "ko", "fr", "ja", "it")  # the only eight the model has
LANGUAGE_VALUES = ("unknown", *LANGUAGES, "zh_tr")  # zh_tr: traditional Chinese
TASKS = ("translate", "transcribe", "caption", "keyword")
STARTS = ("transcript", "analysis")  # <|startoftranscript|>, <|startofanalysis|>
TIMESTAMP_VALUES = ("notimestamps", "sil", "timestamps")
N_TIME_TAGS = 3001  # <|0.00|> … <|30.00|> in 0.01 s steps
INSTRUCTIONS = (
    "caption_audiocaps", "caption_clotho", "audioset_ontology", "caption_plain", "itn", "wo_itn",
    "startofentityvalue", "endofentityvalue", "startofentitytype", "endofentitytype",
    "named_entity_recognition", "audio_grounding", "startofword", "endofword", "delim",
    "emotion_recognition", "music_description", "note_analysis",
)
_AFTER_NOTES = ("speaker_meta", "song_meta")
_QA = ("question", "answer", "choice")
_LAST_INSTRUCTIONS = (
    "scene", "event", "vocal_classification", "speech_understanding", "scenario", "action",
    "entities", "speech_edit",
)
# Tags usable in the output-instruction slot (note fields and QA markers have their own kinds).
INSTRUCTION_VALUES = INSTRUCTIONS + _AFTER_NOTES + _LAST_INSTRUCTIONS


@dataclass(frozen=True)
class SpecialToken:
    text: str
    id: int
    kind: str  # special, chat, extra, audio, transcription, task, language, timestamps, time,
    #            instruction, note_field, qa


def tag(name: str) -> str:
    """`en` → `<|en|>`."""
    return f"<|{name}|>"


def time_tag(seconds: float) -> str:
    """2.33 → `<|2.33|>`; the official list formats i * 0.01 with two decimals."""
    hundredths = round(seconds * 100)
    if not 0 <= hundredths < N_TIME_TAGS or abs(seconds * 100 - hundredths) > 1e-6:
        raise ValueError(f"time {seconds!r} s has no time tag: the tags run from 0.00 to 30.00 "
                         "in 0.01 s steps; round the time to two decimals within [0, 30]")
    return f"<|{hundredths // 100}.{hundredths % 100:02d}|>"


def _vocabulary() -> tuple[SpecialToken, ...]:
    texts_and_kinds: list[tuple[str, str]] = [
        ("<|endoftext|>", "special"), ("<|im_start|>", "chat"), ("<|im_end|>", "chat"),
        *((tag(f"extra_{i}"), "extra") for i in range(205)),
        ("[[[AUDIO:modality]]]", "audio"),
        *((tag(f"startof{s}"), "transcription") for s in STARTS),
        *((tag(t), "task") for t in TASKS),
        *((tag(lang), "language") for lang in LANGUAGE_VALUES),
        *((tag(t), "timestamps") for t in TIMESTAMP_VALUES),
        *((time_tag(i / 100), "time") for i in range(N_TIME_TAGS)),
        *((tag(t), "instruction") for t in INSTRUCTIONS),
        ("<|pitch|>", "note_field"), *((tag(f"midi_pitch_{i}"), "note_field") for i in range(128)),
        ("<|velocity|>", "note_field"), *((tag(f"midi_velocity_{i}"), "note_field") for i in range(128)),
        ("<|sonic|>", "note_field"), ("<|instrument|>", "note_field"),
        *((tag(t), "instruction") for t in _AFTER_NOTES),
        *((tag(t), "qa") for t in _QA),
        *((tag(t), "instruction") for t in _LAST_INSTRUCTIONS),
        ("<audio>", "audio"), ("</audio>", "audio"),
    ]
    return tuple(SpecialToken(text, N_BPE_RANKS + i, kind) for i, (text, kind) in enumerate(texts_and_kinds))


SPECIAL_TOKENS: tuple[SpecialToken, ...] = _vocabulary()
_BY_TEXT = {t.text: t for t in SPECIAL_TOKENS}
if len(_BY_TEXT) != len(SPECIAL_TOKENS) or SPECIAL_TOKENS[-1].id != 155_164:
    raise AssertionError("the special vocabulary must end at </audio> = 155164 with unique texts")

ENDOFTEXT_ID = _BY_TEXT["<|endoftext|>"].id  # 151643
IM_START_ID = _BY_TEXT["<|im_start|>"].id  # 151644
IM_END_ID = _BY_TEXT["<|im_end|>"].id  # 151645
AUDIO_PAD_ID = _BY_TEXT["[[[AUDIO:modality]]]"].id  # 151851
AUDIO_START_ID = _BY_TEXT["<audio>"].id  # 155163
AUDIO_END_ID = _BY_TEXT["</audio>"].id  # 155164
TIME_ZERO_ID = _BY_TEXT["<|0.00|>"].id  # 151871; <|t|> is TIME_ZERO_ID + round(100 t)
VOCAB_SIZE = SPECIAL_TOKENS[-1].id + 1  # 155165 (the model's embedding has 155947 rows)


def token_id(text: str) -> int:
    """The id of one special token, e.g. `token_id("<|en|>") == 151859`."""
    if text not in _BY_TEXT:
        raise KeyError(f"{text!r} is not a Qwen-Audio special token{_did_you_mean(text)}")
    return _BY_TEXT[text].id


def is_tag(text: str) -> bool:
    return text in _BY_TEXT


def _did_you_mean(text: str) -> str:
    close = difflib.get_close_matches(text, _BY_TEXT, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


_TAG_LIKE = re.compile(r"<\|[^<>|]*\|>")


def check_tags(text: str, stacklevel: int = 2) -> list[str]:
    """Warn about every `<|…|>` in `text` that is not a special token; return those strings.

    The official README's `<|startoftranscription|>` is the classic case: it silently becomes
    ordinary BPE pieces and the model sees no transcription tag at all.
    """
    unknown = [m.group() for m in _TAG_LIKE.finditer(text) if m.group() not in _BY_TEXT]
    for name in dict.fromkeys(unknown):
        warnings.warn(f"{name!r} looks like a tag but is not in the Qwen-Audio vocabulary, so it is "
                      f"tokenized as plain text{_did_you_mean(name) or '; no similar tag exists'}",
                      UnknownTagWarning, stacklevel=stacklevel + 1)
    return unknown


# ---------------------------------------------------------------------------------------------
# One prompt: a value per slot. None means the slot is absent (what tag ablation produces).
SLOTS = ("start", "audio_lang", "task", "question", "text_lang", "timestamps", "first_time", "instructions")
SLOT_VALUES: dict[str, tuple[str, ...]] = {
    "start": STARTS, "audio_lang": LANGUAGE_VALUES, "task": TASKS + ("question",),
    "text_lang": LANGUAGE_VALUES, "timestamps": TIMESTAMP_VALUES, "instructions": INSTRUCTION_VALUES,
}


@dataclass(frozen=True)
class TagPrompt:
    """The tags after `<audio>…</audio>`, one bare value per slot (`"en"`, not `"<|en|>"`).
    The defaults are the English ASR prompt; None (or `()`) leaves a slot out."""

    start: str | None = "transcript"
    audio_lang: str | None = "en"
    task: str | None = "transcribe"
    text_lang: str | None = "en"
    timestamps: str | bool | None = "notimestamps"  # True/False are stored as the tag names
    instructions: tuple[str, ...] = ("wo_itn",)
    question: str | None = None  # AQA: `<|question|>{question}<|answer|>`, only with task="question"
    first_time: float | None = None  # SRWT forces the first time tag: `<|timestamps|><|0.00|>`

    def __post_init__(self) -> None:
        if isinstance(self.timestamps, bool):
            object.__setattr__(self, "timestamps", "timestamps" if self.timestamps else "notimestamps")
        if isinstance(self.instructions, str):
            object.__setattr__(self, "instructions", (self.instructions,))
        elif not isinstance(self.instructions, tuple):  # a list would make the prompt unhashable
            object.__setattr__(self, "instructions", tuple(self.instructions))
        for slot in ("start", "audio_lang", "task", "text_lang", "timestamps"):
            value = getattr(self, slot)
            if value is not None and value not in SLOT_VALUES[slot]:
                raise TagPromptError(f"{slot}={value!r} is not allowed{_close(value, SLOT_VALUES[slot])}; allowed "
                                     f"values: {', '.join(SLOT_VALUES[slot])} (or None to leave the slot out)")
        for value in self.instructions:
            if value not in INSTRUCTION_VALUES:
                raise TagPromptError(f"instructions contains {value!r}, which is not an output instruction"
                                     f"{_close(value, INSTRUCTION_VALUES)}; allowed: {', '.join(INSTRUCTION_VALUES)}")
        if (self.task == "question") != (self.question is not None):
            raise TagPromptError(f"question={self.question!r} with task={self.task!r}: an AQA prompt needs "
                                 "task='question' and the question text together, other tasks take no question")
        if self.question is not None and (not self.question or "<|" in self.question or "<audio>" in self.question):
            raise TagPromptError(f"question={self.question!r}: the question must be non-empty plain text "
                                 "without tags")
        if self.first_time is not None:
            time_tag(self.first_time)  # raises with the allowed range

    def slots(self) -> tuple[tuple[str, str], ...]:
        """(slot, rendered text) for every present slot, in the official order."""
        texts = {
            "start": self.start and tag(f"startof{self.start}"),
            "audio_lang": self.audio_lang and tag(self.audio_lang),
            "task": self.task and tag(self.task),
            "question": self.question is not None and f"{self.question}<|answer|>",
            "text_lang": self.text_lang and tag(self.text_lang),
            "timestamps": self.timestamps and tag(self.timestamps),
            "first_time": self.first_time is not None and time_tag(self.first_time),
            "instructions": "".join(tag(i) for i in self.instructions),
        }
        return tuple((slot, texts[slot]) for slot in SLOTS if texts[slot])

    def render(self) -> str:
        return "".join(text for _, text in self.slots())

    def __str__(self) -> str:
        return self.render()

    @classmethod
    def parse(cls, text: str) -> TagPrompt:
        """Read a tag string back into slots (absent slots become None); inverse of `render`."""
        if "<audio>" in text or "</audio>" in text:
            raise TagPromptError(f"{text!r} contains <audio>…</audio>: pass only the tags after </audio>")
        unknown = check_tags(text, stacklevel=3)
        if unknown:
            raise TagPromptError(f"cannot parse {text!r}: {unknown[0]!r} is not a Qwen-Audio tag")
        # (tag name, raw) for tags, (None, raw) for free text
        pieces = []
        for piece in re.split(f"({_TAG_LIKE.pattern})", text):
            if piece:
                pieces.append((piece[2:-2] if _TAG_LIKE.fullmatch(piece) else None, piece))
        values: dict[str, object] = {"start": None, "audio_lang": None, "task": None, "text_lang": None,
                                     "timestamps": None, "instructions": ()}
        i = 0

        def take(slot: str, accepted: Sequence[str]) -> bool:
            nonlocal i
            if i < len(pieces) and pieces[i][0] in accepted:
                values[slot] = pieces[i][0]
                i += 1
                return True
            return False

        if take("start", [f"startof{s}" for s in STARTS]):
            values["start"] = values["start"][len("startof"):]
        take("audio_lang", LANGUAGE_VALUES)
        if take("task", SLOT_VALUES["task"]) and values["task"] == "question":
            if i + 1 < len(pieces) and pieces[i][0] is None and pieces[i + 1][0] == "answer":
                values["question"], i = pieces[i][1], i + 2
            else:
                raise TagPromptError(f"cannot parse {text!r}: <|question|> must be followed by the question "
                                     "text and <|answer|>")
        take("text_lang", LANGUAGE_VALUES)
        take("timestamps", TIMESTAMP_VALUES)
        if i < len(pieces) and _BY_TEXT.get(pieces[i][1], SPECIAL_TOKENS[0]).kind == "time":
            values["first_time"], i = float(pieces[i][0]), i + 1
        while i < len(pieces) and pieces[i][0] in INSTRUCTION_VALUES:
            values["instructions"] += (pieces[i][0],)
            i += 1
        if i < len(pieces):
            raise TagPromptError(f"cannot parse {text!r}: {pieces[i][1]!r} does not fit the slot order "
                                 f"{' · '.join(SLOTS)} after {''.join(p for _, p in pieces[:i])!r}")
        return cls(**values)


# ---------------------------------------------------------------------------------------------
# The official evaluation prompts (eval_audio/*.py), one builder per benchmark.
def _asr(lang: str) -> TagPrompt:
    return TagPrompt("transcript", lang, "transcribe", lang, "notimestamps", ("wo_itn",))


def _st(src: str, tgt: str) -> TagPrompt:
    return TagPrompt("transcript", src, "translate", tgt, "notimestamps", ("itn",))


def _analysis(audio_lang: str, task: str, instruction: str) -> TagPrompt:
    return TagPrompt("analysis", audio_lang, task, "en", "notimestamps", (instruction,))


PRESETS: dict[str, Callable[..., TagPrompt]] = {
    "librispeech": lambda lang="en": _asr(lang),
    "aishell1": lambda lang="zh": _asr(lang),
    "aishell2": lambda lang="zh": _asr(lang),
    "covost2": lambda src, tgt: _st(src, tgt),
    "clotho": lambda: _analysis("unknown", "caption", "caption_clotho"),
    "cochlscene": lambda: _analysis("unknown", "keyword", "scene"),
    "tut2017": lambda: _analysis("unknown", "keyword", "scene"),
    "meld": lambda: _analysis("en", "keyword", "emotion_recognition"),
    "vocalsound": lambda: _analysis("en", "keyword", "vocal_classification"),
    "clothoaqa": lambda question: TagPrompt("analysis", "en", "question", None, None, (), question=question),
    "nsynth": lambda: _analysis("unknown", "keyword", "note_analysis"),
    "srwt": lambda lang="zh": TagPrompt("transcript", lang, "transcribe", lang, "timestamps", (), first_time=0.0),
}


def preset(name: str, **fields: object) -> TagPrompt:
    """The official prompt of a benchmark; `fields` fill its parameters (`lang`, `src`/`tgt`,
    `question`) or override any TagPrompt slot, e.g. `preset("librispeech", timestamps=True)`."""
    if name not in PRESETS:
        raise KeyError(f"no preset {name!r}{_close(name, PRESETS)}; presets: {', '.join(PRESETS)}")
    builder = PRESETS[name]
    signature = inspect.signature(builder).parameters
    params = tuple(signature)
    unknown = set(fields) - set(params) - {f.name for f in dataclasses.fields(TagPrompt)}
    if unknown:
        raise TypeError(f"preset {name!r} takes {', '.join(params) or 'no parameters'} and TagPrompt fields; "
                        f"got {', '.join(sorted(unknown))}")
    missing = [p for p, spec in signature.items() if spec.default is spec.empty and p not in fields]
    if missing:
        raise TypeError(f"preset {name!r} needs {', '.join(missing)}, e.g. "
                        + {"covost2": "preset('covost2', src='en', tgt='de')",
                           "clothoaqa": "preset('clothoaqa', question='Is it raining?')"}.get(name, ""))
    prompt = builder(**{k: v for k, v in fields.items() if k in params})
    return dataclasses.replace(prompt, **{k: v for k, v in fields.items() if k not in params})


def _close(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------------------------
# Variants for tag ablation: each is rendered text, because a permuted order is no TagPrompt.
@dataclass(frozen=True)
class TagVariant:
    label: str  # e.g. "task: transcribe → translate", "drop task", "order: task↔audio_lang"
    prompt_text: str
    slots: tuple[tuple[str, str], ...]  # (slot, text) in the variant's order
    prompt: TagPrompt | None = None  # set where the variant is itself a valid TagPrompt


def _variant(label: str, slots: Sequence[tuple[str, str]]) -> TagVariant:
    text = "".join(t for _, t in slots)
    try:
        prompt = TagPrompt.parse(text)
    except TagPromptError:
        prompt = None
    return TagVariant(label, text, tuple(slots), prompt if prompt is not None and prompt.render() == text else None)


def drop_variants(p: TagPrompt) -> list[TagVariant]:
    """Every prompt with exactly one slot left out."""
    slots = p.slots()
    return [_variant(f"drop {name}", slots[:i] + slots[i + 1:]) for i, (name, _) in enumerate(slots)]


def swap_variants(p: TagPrompt, slot: str | None = None, values: Sequence[str] | None = None) -> list[TagVariant]:
    """Every prompt with one slot's value replaced by another from that slot's vocabulary
    (or by each of `values`, which needs `slot`)."""
    if values is not None and slot is None:
        raise TypeError("values= needs slot=, e.g. swap_variants(p, slot='task', values=['translate'])")
    if slot is not None and slot not in SLOTS:
        raise TagPromptError(f"slot={slot!r} is not a slot; slots: {', '.join(SLOTS)}")
    variants = []
    for name in [slot] if slot else [s for s, _ in p.slots() if s in SLOT_VALUES]:
        current = getattr(p, name)
        shown = ",".join(current) if name == "instructions" else current
        choices = values if values is not None else [v for v in SLOT_VALUES.get(name, ()) if v != "question"]
        for value in choices:
            new = (value,) if name == "instructions" and isinstance(value, str) else value
            if new == current:
                continue
            changes: dict[str, object] = {name: new}
            if name == "task" and p.task == "question":
                changes["question"] = None  # other tasks take no question text
            prompt = dataclasses.replace(p, **changes)
            label_value = ",".join(new) if name == "instructions" else new
            variants.append(TagVariant(f"{name}: {shown} → {label_value}", prompt.render(), prompt.slots(), prompt))
    return variants


def permute_variants(p: TagPrompt, exhaustive: bool = False) -> list[TagVariant]:
    """Slot-order changes: every swap of two slots, or (exhaustive) every permutation."""
    slots = p.slots()
    if exhaustive:
        orders = [(("order: " + ", ".join(n for n, _ in order)), order) for order in itertools.permutations(slots)]
    else:
        orders = []
        for i, j in itertools.combinations(range(len(slots)), 2):
            order = list(slots)
            order[i], order[j] = order[j], order[i]
            orders.append((f"order: {slots[i][0]}↔{slots[j][0]}", tuple(order)))
    # Two slots with the same text (audio_lang = text_lang = en) swap to the unchanged prompt:
    # keep one variant per distinct text, none that equals the original.
    seen = {p.render()}
    variants = []
    for label, order in orders:
        text = "".join(t for _, t in order)
        if text not in seen:
            seen.add(text)
            variants.append(_variant(label, order))
    return variants


# ---------------------------------------------------------------------------------------------
# Time tags in answers: Qwen-Audio-Chat grounds a phrase as "starts at <|2.33|> seconds and ends at
# <|3.26|> seconds". (SRWT transcripts, where one tag ends a word and starts the next, are read by
# `workbench.evaluation.metrics_timestamps.parse_timed_words`.)
TIME_TAG = re.compile(r"<\|(\d{1,2}\.\d{2})\|>")   # the 3001 time tokens, <|0.00|> … <|30.00|>
_QUOTED = re.compile(r"[\"“']([^\"”']+)[\"”']")


@dataclass(frozen=True)
class Segment:
    """A time span of a clip named in an answer: seconds from the clip's start, and what it holds."""

    start: float
    end: float
    text: str

    def cut(self, audio: Sequence[float], rate: int = 16000):
        """The samples of `audio` (1-D, `rate` Hz) from start to end; a segment that runs backwards
        or past the clip's end is an error (model answers do both), never clipped silently."""
        first, stop = round(self.start * rate), round(self.end * rate)
        if stop <= first:
            raise ValueError(f"segment {self.text!r} runs from {self.start:.2f} s to {self.end:.2f} s: it holds no "
                             "audio (the answer's times go backwards); swap or skip it")
        if stop > len(audio):
            raise ValueError(f"segment {self.text!r} ends at {self.end:.2f} s, after the clip's end at "
                             f"{len(audio) / rate:.2f} s: give the clip the answer is about, or skip the segment")
        return audio[first:stop]


def grounding_segments(text: str) -> list[Segment]:
    """The time segments of a grounding answer: its time tags read in pairs (start, end).

    A segment's text is the quoted phrase before its start tag (`The word "middle classes" starts
    at <|2.33|> …`), else the text between the previous segment and its start tag, else the text after
    its end tag (`<|0.00|>-<|1.20|> dog barking`), stripped. An odd last tag has no end: it is left out
    with a warning. Times are kept as written, including a pair that runs backwards.
    """
    pieces = TIME_TAG.split(text)   # text, time, text, time, …, text
    times, texts = [float(t) for t in pieces[1::2]], pieces[0::2]
    if len(times) % 2:
        warnings.warn(f"the answer has {len(times)} time tags: the last, <|{times[-1]:.2f}|>, has no end tag and is "
                      "left out of the segments", UserWarning, stacklevel=2)
    segments, taken = [], False   # taken: the text before this pair labelled the previous one
    for k in range(len(times) // 2):
        before, after = ("" if taken else texts[2 * k].strip()), texts[2 * k + 2].strip()
        quoted = _QUOTED.findall(before)
        label = quoted[-1] if quoted else before.strip(" .,;:-–")
        label, taken = (label, False) if label else (after, True)
        segments.append(Segment(times[2 * k], times[2 * k + 1], label.strip(" .,;:-–")))
    return segments
