"""Text scoring: ASR word error rate and S2TT BLEU, each in the official recipe and a standard one.

Official = what Qwen-Audio's `eval_audio/` scripts do (QwenLM/Qwen-Audio):
- ASR (`evaluate_asr.py`): `remove_sp` on reference and output — every `<|…|>` tag becomes a space,
  whitespace runs collapse, the space before `!,.?;:` goes, leading spaces go, and for zh every
  space goes — then `EvaluationTokenizer(tokenizer_type="none", lowercase=True,
  punctuation_removal=False)` (`evaluate_tokenizer.py`: sacrebleu's "none" tokenizer, so only
  lowercasing) and `.split()`; zh is split again into characters. Punctuation stays glued to its
  word ("classes." ≠ "classes"). No Whisper normaliser (that arrived with Qwen2-Audio's scripts).
  WER = Σ edit distance / Σ reference tokens over the corpus (the `editdistance` package there;
  jiwer's S + D + I here, the same Levenshtein distance).
- S2TT (`evaluate_st.py`): the decoded output as is, `sacrebleu.corpus_bleu(hyps, [refs],
  tokenize=…)` with "zh" for a zh target, "ja-mecab" for ja, "13a" otherwise.

Standard = what other harnesses report: tags dropped, Whisper's `EnglishTextNormalizer` (en) or
`BasicTextNormalizer` (other languages) from whisper-normalizer, then jiwer (CER for zh); sacrebleu
with its signature in the note.

WER and CER are in percent, as the paper reports them; BLEU is sacrebleu's 0–100 score.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

import jiwer
import sacrebleu
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

from workbench.evaluation.items import Metric

OFFICIAL = "official"
STANDARD = "standard"

TAG = re.compile(r"<\|.*?\|>")  # any special tag, as remove_sp matches it
PUNCS = "!,.?;:"  # evaluate_asr.py: the space before these is removed
# Languages scored per character. The official scripts special-case only "zh"; the standard
# recipe follows the same split (Whisper's harness scores zh/ja/ko/th … as CER).
CHARACTER_LANGUAGES = frozenset({"zh"})


# ---------------------------------------------------------------------------------------------
# Official ASR recipe (evaluate_asr.py; evaluate_srwt.py repeats it for the SRWT WER)
def official_clean(text: str, language: str) -> str:
    """`remove_sp`: tags → spaces, collapse whitespace, no space before `!,.?;:`, zh: no spaces."""
    text = TAG.sub(" ", text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(f" ?([{re.escape(PUNCS)}])", r"\1", text)
    text = text.lstrip(" ")
    if language in CHARACTER_LANGUAGES:
        text = re.sub(r"\s+", "", text)
    return text


def official_tokens(text: str, language: str) -> list[str]:
    """The items the official edit distance runs over: lowercased words, or characters for zh."""
    words = official_clean(text, language).lower().split()
    return list("".join(words)) if language in CHARACTER_LANGUAGES else words


def _edit_counts(reference: list[str], hypothesis: list[str]) -> tuple[int, int]:
    """(Levenshtein distance, reference length) between two token lists, via jiwer's alignment."""
    # jiwer splits on whitespace; the tokens hold none, so joining with spaces is lossless.
    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return out.substitutions + out.deletions + out.insertions, len(reference)


def official_asr_item(output: str, reference: str, language: str) -> dict:
    errors, ref_len = _edit_counts(official_tokens(reference, language), official_tokens(output, language))
    return {"errors": errors, "ref_len": ref_len, "wer": _percent(errors, ref_len)}


def official_wer(outputs: Sequence[str], references: Sequence[str], language: str) -> Metric:
    """Corpus WER (percent) as `compute_wer` in evaluate_asr.py: Σ distance / Σ reference length."""
    counts = [official_asr_item(o, r, language) for o, r in zip(outputs, references, strict=True)]
    errors, ref_len = sum(c["errors"] for c in counts), sum(c["ref_len"] for c in counts)
    unit = "characters" if language in CHARACTER_LANGUAGES else "lowercased words, punctuation kept"
    note = f"eval_audio/evaluate_asr.py: remove_sp + edit distance over {unit}; {errors}/{ref_len}"
    if ref_len == 0:
        return Metric("WER", None, OFFICIAL, False, "every reference is empty after remove_sp")
    return Metric("WER", _percent(errors, ref_len), OFFICIAL, False, note)


# ---------------------------------------------------------------------------------------------
# Standard ASR recipe: Whisper's normalisers + jiwer
@lru_cache(maxsize=None)
def _normalizer(language: str):
    # EnglishTextNormalizer also spells out numbers and British/American variants: English only.
    return EnglishTextNormalizer() if language == "en" else BasicTextNormalizer()


def standard_clean(text: str, language: str) -> str:
    """Tags dropped (a harness decodes without special tokens), then Whisper's normaliser."""
    text = _normalizer(language)(TAG.sub(" ", text))
    if language in CHARACTER_LANGUAGES:
        return re.sub(r"\s+", "", text)
    return " ".join(text.split())


def _standard_counts(outputs: Sequence[str], references: Sequence[str], language: str) -> tuple[int, int]:
    refs = [standard_clean(r, language) for r in references]
    hyps = [standard_clean(o, language) for o in outputs]
    if language in CHARACTER_LANGUAGES:
        out = jiwer.process_characters(refs, hyps)
    else:
        out = jiwer.process_words(refs, hyps)
    return out.substitutions + out.deletions + out.insertions, out.substitutions + out.deletions + out.hits


def standard_asr_item(output: str, reference: str, language: str) -> dict:
    errors, ref_len = _standard_counts([output], [reference], language)
    return {"errors": errors, "ref_len": ref_len, "wer": _percent(errors, ref_len)}


def standard_wer(outputs: Sequence[str], references: Sequence[str], language: str) -> Metric:
    name = "CER" if language in CHARACTER_LANGUAGES else "WER"
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs for {len(references)} references")
    errors, ref_len = _standard_counts(outputs, references, language)
    normalizer = type(_normalizer(language)).__name__
    if ref_len == 0:
        return Metric(name, None, STANDARD, False, f"every reference is empty after {normalizer}")
    return Metric(name, _percent(errors, ref_len), STANDARD, False,
                  f"whisper_normalizer {normalizer} + jiwer {name.lower()}; {errors}/{ref_len}")


def asr_metrics(outputs: Sequence[str], references: Sequence[str], language: str) -> list[Metric]:
    return [official_wer(outputs, references, language), standard_wer(outputs, references, language)]


def asr_item(output: str, reference: str, language: str) -> dict:
    """Per-item counts for the runner's records: `wer` (official), `wer_standard`, and their counts."""
    official = official_asr_item(output, reference, language)
    standard = standard_asr_item(output, reference, language)
    return {**official, **{f"{k}_standard": v for k, v in standard.items()}}


def _percent(errors: int, ref_len: int) -> float | None:
    return 100.0 * errors / ref_len if ref_len else None


# ---------------------------------------------------------------------------------------------
# S2TT: sacrebleu
def bleu_tokenizer(target_language: str) -> str:
    """evaluate_st.py's choice (sacrebleu 2's BLEU(trg_lang=…) picks the same for zh/ja)."""
    return {"zh": "zh", "ja": "ja-mecab"}.get(target_language, "13a")


@lru_cache(maxsize=None)
def _bleu_unavailable(tokenize: str) -> str | None:
    """Why sacrebleu cannot tokenize this way here (ja-mecab needs `sacrebleu[ja]`), else None."""
    try:
        sacrebleu.metrics.BLEU(tokenize=tokenize).corpus_score(["a"], [["a"]])
    except (ImportError, RuntimeError) as error:
        return f"sacrebleu tokenizer {tokenize!r} is not installed ({' '.join(str(error).split())})"
    return None


def reference_streams(references: Sequence[str | Sequence[str]]) -> list[list[str]]:
    """sacrebleu's layout: one list per reference *stream*. Each item's reference is a string (one
    stream, as CoVoST 2) or a list holding the same number of references for every item."""
    per_item = [[r] if isinstance(r, str) else list(r) for r in references]
    if len({len(r) for r in per_item}) > 1:
        raise ValueError("every item needs the same number of references for corpus BLEU")
    return [list(stream) for stream in zip(*per_item)]


def official_bleu(outputs: Sequence[str], references: Sequence[str | Sequence[str]], target_language: str) -> Metric:
    """`sacrebleu.corpus_bleu(hyps, [refs], tokenize=…)` on the outputs as decoded (evaluate_st.py)."""
    tokenize = bleu_tokenizer(target_language)
    reason = _bleu_unavailable(tokenize)
    if reason:
        return Metric("BLEU", None, OFFICIAL, True, reason)
    hyps = [o.strip() for o in outputs]  # the official decode ends with .strip(); tags stay in
    result = sacrebleu.corpus_bleu(hyps, reference_streams(references), tokenize=tokenize)
    return Metric("BLEU", result.score, OFFICIAL, True,
                  f"eval_audio/evaluate_st.py: corpus_bleu tokenize={tokenize} on raw outputs "
                  f"(official pin sacrebleu 1.5.1; here {sacrebleu.__version__})")


def standard_bleu(outputs: Sequence[str], references: Sequence[str | Sequence[str]], target_language: str) -> Metric:
    tokenize = bleu_tokenizer(target_language)
    reason = _bleu_unavailable(tokenize)
    if reason:
        return Metric("BLEU", None, STANDARD, True, reason)
    bleu = sacrebleu.metrics.BLEU(tokenize=tokenize)
    result = bleu.corpus_score([_strip_tags(o) for o in outputs], reference_streams(references))
    return Metric("BLEU", result.score, STANDARD, True, str(bleu.get_signature()))


def s2tt_metrics(outputs: Sequence[str], references: Sequence[str | Sequence[str]],
                 target_language: str) -> list[Metric]:
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs for {len(references)} references")
    return [official_bleu(outputs, references, target_language),
            standard_bleu(outputs, references, target_language)]


def s2tt_item(output: str, reference: str | Sequence[str], target_language: str) -> dict:
    """Sentence BLEU (sacrebleu's default exp smoothing) of the tag-stripped output."""
    tokenize = bleu_tokenizer(target_language)
    if _bleu_unavailable(tokenize):
        return {"bleu": None}
    refs = [reference] if isinstance(reference, str) else list(reference)
    return {"bleu": sacrebleu.sentence_bleu(_strip_tags(output), refs, tokenize=tokenize).score}


def _strip_tags(text: str) -> str:
    return " ".join(TAG.sub(" ", text).split())
