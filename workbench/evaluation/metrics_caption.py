"""Audio captioning (Clotho): the coco-caption metrics, as Qwen-Audio's `evaluate_caption.py` runs them.

Official (`eval_audio/evaluate_caption.py` + `eval_audio/metrics.py`): references and outputs are
put in COCO form and tokenized by the Stanford PTBTokenizer (Java; lowercases, drops punctuation),
then coco-caption's Bleu(4), Meteor (Java), Rouge, Cider and Spice (Java + Stanford CoreNLP 3.6.0)
score them, and SPIDEr = (CIDEr + SPICE) / 2. The scripts use the audio-captioning fork of
coco-caption (`caption-evaluation-tools`), a Python 3 port of the same code; here it is PyPI's
`pycocoevalcap`. Outputs are scored as decoded (tags, if any, stay in).

Standard (DCASE / aac-metrics naming): CIDEr-D and SPIDEr-D of the tag-stripped outputs. coco-caption's
"CIDEr" already *is* CIDEr-D (clipped n-gram counts, Gaussian length penalty σ = 6, × 10), the same
computation aac-metrics' `cider_d` performs after the same PTB tokenization; aac-metrics itself cannot be
installed next to transformers 5 (its dependency msclap pins transformers 4.x), so pycocoevalcap's
Cider computes it.

SPICE needs `stanford-corenlp-3.6.0.jar` and its models jar in pycocoevalcap's `spice/lib/`, which
pycocoevalcap downloads on first use; that is never attempted here (offline machines, a 400 MB
download at scoring time). Without them SPICE, SPIDEr and SPIDEr-D are reported unavailable, never 0.
"""
from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path
from typing import Sequence

import sacrebleu

from workbench.evaluation.items import Metric
from workbench.evaluation.metrics_text import OFFICIAL, STANDARD, TAG

OFFICIAL_NAMES = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE", "SPIDEr")
STANDARD_NAMES = ("CIDEr-D", "SPIDEr-D")
_CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def java_unavailable() -> str | None:
    """Why the Java-based coco-caption parts cannot run, or None."""
    if shutil.which("java") is None:
        return "needs Java (`java` on PATH) for coco-caption's PTBTokenizer/METEOR/SPICE; install a JRE"
    return None


def spice_unavailable() -> str | None:
    reason = java_unavailable()
    if reason:
        return reason
    from pycocoevalcap import spice

    lib = Path(spice.__file__).parent / "lib"
    missing = [jar for jar in _CORENLP_JARS if not (lib / jar).exists()]
    if missing:
        return (f"SPICE needs Stanford CoreNLP 3.6.0 ({', '.join(missing)} in {lib}), which pycocoevalcap "
                "downloads at first use; not fetched here (no network at scoring time) — copy the jars "
                "from stanford-corenlp-full-2015-12-09.zip into that folder to enable SPICE")
    return None


def caption_metrics(outputs: Sequence[str], references: Sequence[Sequence[str]]) -> list[Metric]:
    """Corpus metrics for captions; `references` holds each clip's reference captions (Clotho: 5)."""
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs for {len(references)} reference lists")
    reason = java_unavailable()
    if reason:
        return ([Metric(n, None, OFFICIAL, True, reason) for n in OFFICIAL_NAMES]
                + [Metric(n, None, STANDARD, True, reason) for n in STANDARD_NAMES])
    gts = ptb_tokenize([[str(r) for r in refs] for refs in references])
    official_res = ptb_tokenize([[o.strip()] for o in outputs])
    standard_res = ptb_tokenize([[" ".join(TAG.sub(" ", o).split())] for o in outputs])

    official = _coco_scores(gts, official_res)
    # The standard outputs differ only where a tag was generated: reuse the scores otherwise.
    standard = official if standard_res == official_res else _coco_scores(gts, standard_res, only_cider_spice=True)
    note = "eval_audio/evaluate_caption.py: PTBTokenizer + pycocoevalcap"
    metrics = [Metric(name, official[name][0], OFFICIAL, True, official[name][1] or note) for name in OFFICIAL_NAMES]
    std_note = "pycocoevalcap Cider (= CIDEr-D: clipping + Gaussian length penalty σ=6) on tag-stripped outputs"
    metrics.append(Metric("CIDEr-D", standard["CIDEr"][0], STANDARD, True, standard["CIDEr"][1] or std_note))
    metrics.append(Metric("SPIDEr-D", standard["SPIDEr"][0], STANDARD, True,
                          standard["SPIDEr"][1] or "(CIDEr-D + SPICE) / 2"))
    return metrics


def ptb_tokenize(captions: Sequence[Sequence[str]]) -> dict[int, list[str]]:
    """Stanford PTBTokenizer over {clip index: captions}, as the official CocoTokenizer does."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    coco = {i: [{"caption": c} for c in caps] for i, caps in enumerate(captions)}
    tokenized = PTBTokenizer().tokenize(coco)
    # The wrapper rstrips its input, so trailing empty captions come back missing: they are empty.
    return {i: tokenized.get(i, [""] * len(caps)) for i, caps in enumerate(captions)}


def _coco_scores(gts: dict, res: dict, only_cider_spice: bool = False) -> dict[str, tuple[float | None, str]]:
    """{metric: (value, note)}; the note is empty unless the value is missing."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    scores: dict[str, tuple[float | None, str]] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # coco-caption prints progress to stdout
        scores["CIDEr"] = (float(Cider().compute_score(gts, res)[0]), "")
        if not only_cider_spice:
            bleu = Bleu(4).compute_score(gts, res)[0]
            scores.update({f"BLEU_{n}": (float(bleu[n - 1]), "") for n in range(1, 5)})
            scores["ROUGE_L"] = (float(Rouge().compute_score(gts, res)[0]), "")
            scores["METEOR"] = _meteor(gts, res)
        scores["SPICE"] = _spice(gts, res)
    spice, why = scores["SPICE"]
    scores["SPIDEr"] = ((scores["CIDEr"][0] + spice) / 2, "") if spice is not None else (None, f"needs SPICE: {why}")
    return scores


def _meteor(gts: dict, res: dict) -> tuple[float | None, str]:
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        meteor = Meteor()  # starts `java -jar meteor-1.5.jar` (2 GB heap)
        try:
            return float(meteor.compute_score(gts, res)[0]), ""
        finally:
            del meteor  # its __del__ ends the Java process
    except Exception as error:  # a Java subprocess: any failure is reported, never scored as 0
        return None, f"METEOR failed: {type(error).__name__}: {error}"


def _spice(gts: dict, res: dict) -> tuple[float | None, str]:
    reason = spice_unavailable()
    if reason:
        return None, reason
    from pycocoevalcap.spice.spice import Spice

    try:
        return float(Spice().compute_score(gts, res)[0]), ""
    except Exception as error:  # a Java subprocess (8 GB heap, LMDB cache): report, never score 0
        return None, f"SPICE failed: {type(error).__name__}: {error}"


def caption_item(output: str, references: Sequence[str]) -> dict:
    """Per-clip numbers that need no corpus or Java: word count and sacrebleu sentence BLEU
    (13a, lowercased) of the tag-stripped output against all references."""
    text = " ".join(TAG.sub(" ", output).split())
    bleu = sacrebleu.sentence_bleu(text, [str(r) for r in references], lowercase=True)
    return {"words": len(text.split()), "sentence_bleu": bleu.score}
