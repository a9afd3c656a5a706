"""Scorers for every Qwen-Audio benchmark, each in two recipes side by side.

`recipe="official"` reproduces QwenLM/Qwen-Audio's `eval_audio/evaluate_*.py` (what the paper's
numbers were computed with); `recipe="standard"` is what other harnesses report (Whisper's
normalisers + jiwer, sacrebleu with its signature, CIDEr-D / SPIDEr-D). A metric that cannot be
computed on this machine is `Metric(value=None, note=why)`, never 0.

Corpus scorers return `list[Metric]`; item scorers return a small dict for the runner's JSONL
records. Units follow the paper: WER/CER in percent, BLEU 0–100, accuracies and mAP as fractions,
CIDEr/SPICE/SPIDEr as coco-caption gives them, AAS in milliseconds.

| kind | corpus | per item | module |
|---|---|---|---|
| asr | `asr_metrics(outputs, references, language)` | `asr_item` | metrics_text |
| s2tt | `s2tt_metrics(outputs, references, target_language)` | `s2tt_item` | metrics_text |
| aac | `caption_metrics(outputs, reference_lists)` | `caption_item` | metrics_caption |
| asc, ser, vsc | `label_accuracy(outputs, labels)` | `label_item` | metrics_labels |
| aqa | `aqa_metrics(outputs, answers, questions=None)` | `aqa_item` | metrics_labels |
| mna | `note_metrics(outputs, references)` | `note_item` | metrics_notes |
| srwt | `srwt_metrics(outputs, references, language)` | `srwt_item` | metrics_timestamps |
"""
from __future__ import annotations

from workbench.evaluation.metrics_caption import (
    caption_item,
    caption_metrics,
    java_unavailable,
    ptb_tokenize,
    spice_unavailable,
)
from workbench.evaluation.metrics_labels import aqa_item, aqa_metrics, label_accuracy, label_item, normalize_label
from workbench.evaluation.metrics_notes import QUALITIES, Note, note_from_reference, note_item, note_metrics, parse_note
from workbench.evaluation.metrics_text import (
    OFFICIAL,
    STANDARD,
    asr_item,
    asr_metrics,
    bleu_tokenizer,
    official_bleu,
    official_clean,
    official_tokens,
    official_wer,
    s2tt_item,
    s2tt_metrics,
    standard_bleu,
    standard_clean,
    standard_wer,
)
from workbench.evaluation.metrics_timestamps import (
    TimedWord,
    aas,
    parse_timed_words,
    srwt_item,
    srwt_metrics,
    timed_words,
    word_shift,
)

__all__ = [
    "OFFICIAL", "STANDARD",
    "asr_metrics", "asr_item", "official_wer", "standard_wer", "official_clean", "official_tokens", "standard_clean",
    "s2tt_metrics", "s2tt_item", "official_bleu", "standard_bleu", "bleu_tokenizer",
    "caption_metrics", "caption_item", "ptb_tokenize", "java_unavailable", "spice_unavailable",
    "label_accuracy", "label_item", "aqa_metrics", "aqa_item", "normalize_label",
    "note_metrics", "note_item", "parse_note", "note_from_reference", "Note", "QUALITIES",
    "srwt_metrics", "srwt_item", "aas", "word_shift", "parse_timed_words", "timed_words", "TimedWord",
]
