"""Music note analysis (NSynth), as Qwen-Audio's `eval_audio/evaluate_note_analysis.py` scores it.

The model answers in tags: `<|pitch|><|midi_pitch_60|><|velocity|><|midi_velocity_100|>
<|instrument|>keyboard<|sonic|>bright, fast_decay` (in some order). The official parser
(`get_note_info`) takes the first `<|pitch|><|midi_pitch_N|>` (128 when absent), the first
`<|velocity|><|midi_velocity_N|>` (128 when absent), and the text after `<|instrument|>` / `<|sonic|>`
up to the next `<`; qualities are the `", "`-separated names in the 10-label NSynth set.

Official metrics:
- instrument and velocity: `accuracy_score`, exact match (a missing field is "" / 128 and so wrong);
- qualities: macro average precision (`average_precision_score(…, average="macro")`) where the
  *scores are the generated label set itself* (1 for a named quality, 0 otherwise — a generated set
  has no ranking), over the qualities a `MultiLabelBinarizer` finds in references + outputs (a quality
  only ever generated gets AP 0 with the sklearn installed here; older releases may give NaN);
- pitch: heareval's `Top1Accuracy` / `ChromaAccuracy` over a `MultiLabelBinarizer` of reference and
  output pitches: top-1 is exact pitch; chroma compares *column indices* mod 12, which equals
  MIDI pitch class only when the pitches seen form one unbroken range (reproduced as is).

Standard: chroma on MIDI numbers (`pitch % 12`, no output pitch = wrong); qualities mAP over the fixed
10 NSynth qualities, averaging the qualities with at least one positive reference; instrument after
`normalize_label`.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score
from sklearn.preprocessing import MultiLabelBinarizer

from workbench.evaluation.items import Metric
from workbench.evaluation.metrics_labels import normalize_label
from workbench.evaluation.metrics_text import OFFICIAL, STANDARD

QUALITIES = ("bright", "dark", "distortion", "fast_decay", "long_release", "multiphonic",
             "nonlinear_env", "percussive", "reverb", "tempo-synced")
MISSING = 128  # get_note_info's value for an absent or unreadable pitch / velocity


@dataclass(frozen=True)
class Note:
    pitch: int  # MIDI 0–127; 128 = absent
    velocity: int  # MIDI 0–127; 128 = absent
    instrument: str  # "" = absent
    qualities: tuple[str, ...]  # only names in QUALITIES, in the order given


def parse_note(text: str) -> Note:
    """The official `get_note_info`, then the qualities filtered to the 10 NSynth names."""
    return Note(_first_int(r"<\|pitch\|><\|midi_pitch_(.*?)\|>", text),
                _first_int(r"<\|velocity\|><\|midi_velocity_(.*?)\|>", text),
                _field(r"<\|instrument\|>(.*)", text),
                _qualities(_field(r"<\|sonic\|>(.*)", text)))


def note_from_reference(reference: Mapping[str, Any] | str) -> Note:
    """A reader's dict, or an official tag string. The dict has pitch and velocity, the instrument
    as "instrument" or NSynth's "instrument_family_str" (the 11 families the paper's instrument
    accuracy is over), and the qualities as "qualities" or NSynth's "qualities_str" (a list, or "a, b")."""
    if isinstance(reference, str):
        return parse_note(reference)
    instrument = reference["instrument"] if "instrument" in reference else reference["instrument_family_str"]
    qualities = reference.get("qualities", reference.get("qualities_str", ()))
    if isinstance(qualities, str):
        qualities = qualities.split(", ")
    return Note(int(reference["pitch"]), int(reference["velocity"]), str(instrument),
                tuple(q for q in qualities if q in QUALITIES))


def _first_int(pattern: str, text: str) -> int:
    found = re.findall(pattern, text)
    try:
        return int(found[0]) if found else MISSING
    except ValueError:
        return MISSING


def _field(pattern: str, text: str) -> str:
    found = re.findall(pattern, text)  # `.` stops at a newline, as in the official regex
    return found[0].split("<")[0] if found else ""


def _qualities(sonic: str) -> tuple[str, ...]:
    return tuple(q for q in sonic.split(", ") if q in QUALITIES) if sonic else ()


# ---------------------------------------------------------------------------------------------
def note_metrics(outputs: Sequence[str], references: Sequence[Mapping[str, Any] | str]) -> list[Metric]:
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs for {len(references)} references")
    if not outputs:
        return [Metric(n, None, OFFICIAL, True, "no items") for n in
                ("instrument_ACC", "velocity_ACC", "qualities_mAP", "pitch_ACC", "pitch_chroma_ACC")]
    hyps = [parse_note(o) for o in outputs]
    refs = [note_from_reference(r) for r in references]
    src = "eval_audio/evaluate_note_analysis.py"
    top1, chroma = _official_pitch(refs, hyps)
    return [
        Metric("instrument_ACC", float(accuracy_score([r.instrument for r in refs], [h.instrument for h in hyps])),
               OFFICIAL, True, f"{src}: exact match"),
        Metric("velocity_ACC", float(accuracy_score([r.velocity for r in refs], [h.velocity for h in hyps])),
               OFFICIAL, True, f"{src}: exact MIDI velocity"),
        _official_qualities_map(refs, hyps, src),
        Metric("pitch_ACC", top1, OFFICIAL, True, f"{src}: heareval Top1Accuracy"),
        Metric("pitch_chroma_ACC", chroma, OFFICIAL, True,
               f"{src}: heareval ChromaAccuracy on binarizer column indices mod 12"),
        Metric("instrument_ACC", float(np.mean([normalize_label(r.instrument) == normalize_label(h.instrument)
                                                for r, h in zip(refs, hyps)])),
               STANDARD, True, "exact match after normalize_label"),
        _standard_qualities_map(refs, hyps),
        Metric("pitch_chroma_ACC", float(np.mean([h.pitch != MISSING and h.pitch % 12 == r.pitch % 12
                                                  for r, h in zip(refs, hyps)])),
               STANDARD, True, "MIDI pitch class (pitch % 12); no pitch in the output counts wrong"),
    ]


def _official_pitch(refs: list[Note], hyps: list[Note]) -> tuple[float, float]:
    # One binarizer over reference + output pitches; argmax of a one-hot row is its column index.
    onehot = MultiLabelBinarizer().fit_transform([[n.pitch] for n in refs + hyps])
    columns = onehot.argmax(axis=1)
    ref_cols, hyp_cols = columns[:len(refs)], columns[len(refs):]
    return float(np.mean(ref_cols == hyp_cols)), float(np.mean(ref_cols % 12 == hyp_cols % 12))


def _official_qualities_map(refs: list[Note], hyps: list[Note], src: str) -> Metric:
    binarized = MultiLabelBinarizer().fit_transform([n.qualities for n in refs + hyps])
    if binarized.shape[1] == 0:
        return Metric("qualities_mAP", None, OFFICIAL, True, "no quality in any reference or output")
    y_true, y_score = binarized[:len(refs)], binarized[len(refs):]
    with warnings.catch_warnings():  # "No positive class found in y_true": that quality scores 0
        warnings.simplefilter("ignore", UserWarning)
        value = average_precision_score(y_true, y_score, average="macro")
    return Metric("qualities_mAP", float(value), OFFICIAL, True,
                  f"{src}: macro AP, binary scores from the generated set, over the {binarized.shape[1]} "
                  "qualities seen in references or outputs")


def _standard_qualities_map(refs: list[Note], hyps: list[Note]) -> Metric:
    binarizer = MultiLabelBinarizer(classes=list(QUALITIES))
    y_true = binarizer.fit_transform([n.qualities for n in refs])
    y_score = binarizer.transform([n.qualities for n in hyps])
    present = y_true.sum(axis=0) > 0  # AP is undefined for a quality no reference has
    if not present.any():
        return Metric("qualities_mAP", None, STANDARD, True, "no reference has any quality")
    value = average_precision_score(y_true[:, present], y_score[:, present], average="macro")
    return Metric("qualities_mAP", float(value), STANDARD, True,
                  f"macro AP over the {int(present.sum())} of 10 qualities with a positive reference; "
                  "binary scores from the generated set")


def note_item(output: str, reference: Mapping[str, Any] | str) -> dict:
    hyp, ref = parse_note(output), note_from_reference(reference)
    has_pitch = hyp.pitch != MISSING
    return {"pitch": hyp.pitch if has_pitch else None,
            "pitch_error": abs(hyp.pitch - ref.pitch) if has_pitch else None,  # semitones
            "pitch_correct": float(hyp.pitch == ref.pitch),
            "chroma_correct": float(has_pitch and hyp.pitch % 12 == ref.pitch % 12),
            "velocity_correct": float(hyp.velocity == ref.velocity),
            "instrument_correct": float(hyp.instrument == ref.instrument),
            "qualities": list(hyp.qualities)}
