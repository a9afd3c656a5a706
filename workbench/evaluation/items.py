"""One benchmark item as a dataset reader yields it, and one metric value as a scorer reports it.

Readers (`workbench.evaluation.readers`) turn a dataset's native layout into `Item`s; tasks
(`workbench.evaluation.tasks`) say how to prompt and score them; the runner
(`workbench.evaluation.runner`) generates and records. These two dataclasses are the contract.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Item:
    """One evaluation example, read from a dataset as distributed."""

    id: str              # stable and unique within the split (LibriSpeech utterance id, Clotho file name…)
    audio: Path          # the audio (or video, for MELD) file as distributed; load_audio decodes it
    reference: Any       # str (transcript, translation, label, answer); list[str] (Clotho's 5 captions);
                         # dict (NSynth: pitch, velocity, instrument, qualities); list[(word, start_s, end_s)] (SRWT)
    question: str | None = None                         # ClothoAQA's question
    meta: dict[str, Any] = field(default_factory=dict)  # language, speaker, split, yes/no flag…


@dataclass(frozen=True)
class Metric:
    """One corpus-level number, labelled with the recipe that produced it."""

    name: str                  # "WER", "CER", "BLEU", "CIDEr", "SPIDEr", "ACC", "AAS_ms", …
    value: float | None        # None when the metric could not be computed here (see `note`)
    recipe: str                # "official" (the eval_audio recipe) or "standard" (what other harnesses report)
    higher_is_better: bool
    note: str = ""             # e.g. the sacrebleu signature, or why the metric is unavailable
