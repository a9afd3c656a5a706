"""Speech recognition with word timestamps (SRWT): WER and average alignment shift (AAS).

Format (eval_audio/EVALUATION.md; `evaluate_srwt.py`): words sit between time tags,
`<|0.00|><|sil|><|0.54|>面<|0.86|>条<|1.17|>机<|1.46|><|sil|><|2.01|>`; each word spans the tags on
either side, and silence is a "word" `<|sil|>`. The prompt ends in `<|timestamps|><|0.00|>`, so the
output starts after that first tag; the parser drops the text before the first tag, which handles
both forms.

AAS, official (`AverageShiftCalculator` in evaluate_srwt.py, taken from FunASR): per utterance,
the reference and output words are aligned by `edit_distance.SequenceMatcher`; for each word the
alignment calls "equal", shift = |Δstart| + |Δend|; AAS = Σ shift / number of matched words over the
corpus, in seconds there and × 1000 here (the paper's 51.5 ms). `<|sil|>` segments count as words.
An output with no time tag at all is a "pattern error": the official script then fails on an assert;
here that utterance is skipped and counted in the note. The paper's AAS is this per-word sum of
the start and end shifts — not their mean.

AAS, standard: the same formula and alignment over real words only — `<|sil|>` and empty segments
dropped from both sides first — so silence boundaries neither help nor hurt.

WER: the official ASR recipe on the text with every tag removed (zh per character), and the standard one.
Words are compared after `str.strip()` (a no-op for zh, where the official format has no spaces).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import edit_distance

from workbench.evaluation.items import Metric
from workbench.evaluation.metrics_text import (
    CHARACTER_LANGUAGES,
    OFFICIAL,
    STANDARD,
    TAG,
    official_asr_item,
    official_wer,
    standard_asr_item,
    standard_wer,
)

_TIME = re.compile(r"<\|\d{1,2}\.\d+\|>")  # evaluate_srwt.py's ts_pattern
_PREFIX_TAGS = ("<|startoftranscript|>", "<|transcribe|>")


@dataclass(frozen=True)
class TimedWord:
    word: str
    start: float  # seconds
    end: float


Reference = str | Sequence[tuple[str, float, float]] | Sequence[TimedWord]


def parse_timed_words(text: str) -> list[TimedWord] | None:
    """`read_timestamps` of evaluate_srwt.py; None for its pattern error (no time tag at all)."""
    body = text
    for prefix in _PREFIX_TAGS:
        body = body.replace(prefix, "")
    # The official code removes <|en|> if present, else <|zh|>: one language tag, all occurrences.
    body = body.replace("<|en|>", "") if "<|en|>" in body else body.replace("<|zh|>", "")
    times = [float(t[2:-2]) for t in _TIME.findall(body)]
    words = _TIME.split(body)[1:-1]
    if len(times) != len(words) + 1:
        return None
    return [TimedWord(w.strip(), times[i], times[i + 1]) for i, w in enumerate(words)]


def timed_words(reference: Reference) -> list[TimedWord] | None:
    """A reader's [(word, start_s, end_s), …] (or TimedWords), or an official tag string."""
    if isinstance(reference, str):
        return parse_timed_words(reference)
    return [w if isinstance(w, TimedWord) else TimedWord(str(w[0]).strip(), float(w[1]), float(w[2]))
            for w in reference]


def reference_text(reference: Reference, language: str) -> str:
    """The transcript the WER compares against (tags are removed later by the ASR recipes)."""
    if isinstance(reference, str):
        return reference
    return ("" if language in CHARACTER_LANGUAGES else " ").join(w.word for w in timed_words(reference))


def _words_only(words: list[TimedWord]) -> list[TimedWord]:
    return [w for w in words if TAG.sub("", w.word).strip()]


def word_shift(reference: list[TimedWord], output: list[TimedWord]) -> tuple[float, int]:
    """(Σ |Δstart| + |Δend| in seconds, matched words) over the "equal" edit-distance alignment."""
    matcher = edit_distance.SequenceMatcher([w.word for w in reference], [w.word for w in output])
    shift, matched = 0.0, 0
    for tag, i, _, j, _ in matcher.get_opcodes():  # one opcode per element
        if tag == "equal":
            shift += abs(reference[i].start - output[j].start) + abs(reference[i].end - output[j].end)
            matched += 1
    return shift, matched


def aas(outputs: Sequence[str], references: Sequence[Reference], recipe: str = OFFICIAL) -> Metric:
    """Corpus average alignment shift in ms (see the module doc for both recipes)."""
    total, matched, unparsed, unmatched = 0.0, 0, 0, 0
    for output, reference in zip(outputs, references, strict=True):
        hyp, ref = parse_timed_words(output), timed_words(reference)
        if hyp is None or ref is None:
            unparsed += 1
            continue
        if recipe == STANDARD:
            hyp, ref = _words_only(hyp), _words_only(ref)
        shift, count = word_shift(ref, hyp)
        if count == 0:
            unmatched += 1  # the official loop skips these too
        total, matched = total + shift, matched + count
    note = (f"{'<|sil|> counted as a word' if recipe == OFFICIAL else 'words only, <|sil|> dropped'}; "
            f"Σ(|Δstart|+|Δend|)/matched words, {matched} matched; {unparsed} utterances without time "
            f"tags skipped; {unmatched} with no matched word")
    if matched == 0:
        return Metric("AAS_ms", None, recipe, False, "no word matched between outputs and references; " + note)
    source = "eval_audio/evaluate_srwt.py AverageShiftCalculator: " if recipe == OFFICIAL else ""
    return Metric("AAS_ms", 1000.0 * total / matched, recipe, False, source + note)


def srwt_metrics(outputs: Sequence[str], references: Sequence[Reference], language: str) -> list[Metric]:
    texts = [reference_text(r, language) for r in references]
    return [official_wer(outputs, texts, language), aas(outputs, references, OFFICIAL),
            standard_wer(outputs, texts, language), aas(outputs, references, STANDARD)]


def srwt_item(output: str, reference: Reference, language: str) -> dict:
    text = reference_text(reference, language)
    official = official_asr_item(output, text, language)
    hyp, ref = parse_timed_words(output), timed_words(reference)
    shift, matched = word_shift(ref, hyp) if hyp is not None and ref is not None else (0.0, 0)
    return {**official, "wer_standard": standard_asr_item(output, text, language)["wer"],
            "timestamps_parsed": hyp is not None, "matched_words": matched,
            "aas_ms": 1000.0 * shift / matched if matched else None}
