"""Label tasks: scene (ASC), emotion (SER) and vocal-sound (VSC) classification, and ClothoAQA.

Official: `sklearn.metrics.accuracy_score(refs, hyps)` on the reference string and the output as
decoded and stripped — exact, case-sensitive string equality (`evaluate_scene.py`,
`evaluate_emotion.py`, `evaluate_vocal_sound.py`, `evaluate_aqa.py`). ClothoAQA's eval file holds one
row per accepted answer (a question with three answers is three rows, each scored against the same
output); its "binary" accuracy is over the rows whose answer, lowercased, is "yes" or "no".

Standard: the same match after light normalisation (tags dropped, case folded, `_` as a space,
surrounding punctuation and whitespace stripped); for ClothoAQA, one decision per question — correct
when the output matches any accepted answer — with yes/no questions those whose answers are all yes/no.
"""
from __future__ import annotations

import string
from collections import defaultdict
from typing import Hashable, Sequence

from sklearn.metrics import accuracy_score

from workbench.evaluation.items import Metric
from workbench.evaluation.metrics_text import OFFICIAL, STANDARD, TAG

YES_NO = frozenset({"yes", "no"})


def normalize_label(text: str) -> str:
    """The standard recipe's label form: "Tram." → "tram", "cafe_restaurant" → "cafe restaurant"."""
    text = TAG.sub(" ", text).casefold().replace("_", " ")
    return " ".join(text.split()).strip(string.punctuation + " ")


def label_key(text: str) -> str:
    """What two class labels are compared on: `normalize_label` without spaces, because datasets
    spell their classes "throatclearing" (VocalSound) or "CrowdedIndoor" (CochlScene) where a model
    says "throat clearing" / "crowded indoor"."""
    return normalize_label(text).replace(" ", "")


def label_accuracy(outputs: Sequence[str], labels: Sequence[str]) -> list[Metric]:
    if len(outputs) != len(labels):
        raise ValueError(f"{len(outputs)} outputs for {len(labels)} labels")
    if not labels:
        return [Metric("ACC", None, r, True, "no items") for r in (OFFICIAL, STANDARD)]
    official = accuracy_score(list(labels), [o.strip() for o in outputs])
    standard = accuracy_score([label_key(x) for x in labels], [label_key(o) for o in outputs])
    return [Metric("ACC", float(official), OFFICIAL, True, "sklearn accuracy_score, exact string match"),
            Metric("ACC", float(standard), STANDARD, True, "exact match after label_key (case, _, punctuation, spaces)")]


def label_item(output: str, label: str) -> dict:
    return {"correct": float(output.strip() == label),
            "correct_standard": float(label_key(output) == label_key(label))}


# ---------------------------------------------------------------------------------------------
# ClothoAQA
def aqa_metrics(outputs: Sequence[str], answers: Sequence[str | Sequence[str]],
                questions: Sequence[Hashable] | None = None) -> list[Metric]:
    """`answers[i]` is the row's answer, or all accepted answers of the question (expanded into one
    row each, as the official eval file has them). `questions[i]` identifies the question (e.g.
    (audio, question)) for the standard per-question accuracy; by default each item is a question."""
    if len(outputs) != len(answers):
        raise ValueError(f"{len(outputs)} outputs for {len(answers)} answers")
    rows = [(o.strip(), a) for o, accepted in zip(outputs, answers) for a in _as_list(accepted)]
    metrics = _official_aqa(rows)
    keys = list(questions) if questions is not None else list(range(len(outputs)))
    return metrics + _standard_aqa(outputs, answers, keys)


def _official_aqa(rows: list[tuple[str, str]]) -> list[Metric]:
    note = "eval_audio/evaluate_aqa.py: accuracy_score over rows (one per accepted answer), exact match"
    binary = [(h, r) for h, r in rows if r.lower() in YES_NO]
    return [_accuracy("ACC", [r for _, r in rows], [h for h, _ in rows], OFFICIAL, note),
            _accuracy("ACC_yes_no", [r for _, r in binary], [h for h, _ in binary], OFFICIAL,
                      note + "; rows whose answer is yes/no")]


def _standard_aqa(outputs: Sequence[str], answers: Sequence[str | Sequence[str]],
                  keys: Sequence[Hashable]) -> list[Metric]:
    accepted: dict[Hashable, set[str]] = defaultdict(set)
    said: dict[Hashable, str] = {}
    for output, answer, key in zip(outputs, answers, keys, strict=True):
        accepted[key].update(normalize_label(a) for a in _as_list(answer))
        said.setdefault(key, normalize_label(output))  # a repeated question has one output
    correct = {key: float(said[key] in accepted[key]) for key in accepted}
    yes_no = [key for key in accepted if accepted[key] <= YES_NO]
    note = "per question: correct if the normalised output matches any accepted answer"
    return [_mean("ACC", list(correct.values()), note),
            _mean("ACC_yes_no", [correct[k] for k in yes_no], note + "; questions whose answers are all yes/no")]


def aqa_item(output: str, answers: str | Sequence[str]) -> dict:
    """`correct`: the official row score (mean over the answers when several are given)."""
    accepted = _as_list(answers)
    return {"correct": sum(output.strip() == a for a in accepted) / len(accepted),
            "correct_standard": float(normalize_label(output) in {normalize_label(a) for a in accepted}),
            "yes_no": all(a.lower() in YES_NO for a in accepted)}


def _as_list(answers: str | Sequence[str]) -> list[str]:
    return [answers] if isinstance(answers, str) else [str(a) for a in answers]


def _accuracy(name: str, refs: list[str], hyps: list[str], recipe: str, note: str) -> Metric:
    if not refs:
        return Metric(name, None, recipe, True, "no rows to score")
    return Metric(name, float(accuracy_score(refs, hyps)), recipe, True, f"{note}; n={len(refs)}")


def _mean(name: str, values: list[float], note: str) -> Metric:
    if not values:
        return Metric(name, None, STANDARD, True, "no questions to score")
    return Metric(name, sum(values) / len(values), STANDARD, True, f"{note}; n={len(values)}")
