"""The capability table: written from the families' adapters, shown in the README, and true.

Every cell (family × analysis) either runs on a small model of that family or raises one
`NotSupportedError` that names the family and the analysis; the README's table is the generated
one; each family's adapter fills exactly the parts it declares.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_models import WHISPER_PREFIX, write_qwen2_audio, write_whisper

import workbench as wb
from workbench.analysis.capabilities import ANALYSES, README_BEGIN, README_END, capability_markdown, require, supports
from workbench.errors import NotSupportedError, UnsupportedModelError
from workbench.models.adapter import PARTS
from workbench.models.loading import FAMILIES

README = Path(__file__).resolve().parents[1] / "README.md"
AUDIO = (0.1 * np.random.default_rng(0).standard_normal(24_000)).astype(np.float32)   # 1.5 s
WORDS = [("hi", 0.2)]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple]:
    """family label → (model, prompt for it). The embedded nano stands for Qwen-Audio."""
    root = tmp_path_factory.mktemp("families")
    qwen2 = wb.load(write_qwen2_audio(root / "qwen2_audio"))
    return {"Qwen-Audio (v1, -Chat, nano)": (wb.load("nano"), wb.preset("librispeech")),
            "Qwen2-Audio": (qwen2, "<|audio_bos|><|AUDIO|><|audio_eos|>"),
            "Whisper": (wb.load(write_whisper(root / "whisper")), WHISPER_PREFIX)}


# One small call per analysis: (model, prompt) → something that ran.
CALLS = {
    "trace": lambda m, p: wb.trace(m, p, AUDIO, capture="*.layers.0.*pattern", logits="last"),
    "logit_lens": lambda m, p: wb.logit_lens(m, p, AUDIO),
    "probe": lambda m, p: wb.probe(m, [AUDIO] * 2 + [AUDIO / 2] * 2, m.adapter.sequence.name + ".layers.{}.resid_post",
                                   labels=[0, 0, 1, 1], prompt=p, positions="last", test_size=0.5),
    "align": lambda m, p: wb.align(m, p, AUDIO, text=" hi"),
    "find_alignment_heads": lambda m, p: wb.find_alignment_heads(m, p, AUDIO, WORDS, text=" hi"),
    "patch_sweep": lambda m, p: wb.patch_sweep(m, p, p, AUDIO, layers=[0], continuation=" hi"),
    "knockout_sweep": lambda m, p: wb.knockout_sweep(m, p, AUDIO, stack=m.adapter.sequence.name, layers=[0],
                                                   continuation=" hi"),
    "edge_knockout": lambda m, p: wb.edge_knockout(m, p, AUDIO, edges=[("answer", "audio")], layers=[0],
                                                 continuation=" hi"),
    "direct_logit_attribution": lambda m, p: wb.direct_logit_attribution(m, p, AUDIO),
    "attribution_patch": lambda m, p: wb.attribution_patch(m, p, p, AUDIO, layers=[0], continuation=" hi"),
    "causal_trace": lambda m, p: wb.causal_trace(m, p, AUDIO, "noise", layers=[0], bins=2, continuation=" hi"),
    "ablate": lambda m, p: wb.ablate(m, AUDIO, p, variants="drop", max_new_tokens=2),
    "attribute_tags": lambda m, p: wb.attribute_tags(m, AUDIO, p, " hi", methods=("ablation",)),
    "attribute_audio": lambda m, p: wb.attribute_audio(m, AUDIO, p, " hi", window=10),
    "Chat": lambda m, p: wb.Chat(m, audio_dir=".").ask("hello", max_new_tokens=2),
}


def test_every_analysis_has_a_call():
    assert set(CALLS) == set(ANALYSES)


def test_the_readme_shows_the_generated_table():
    text = README.read_text()
    assert README_BEGIN in text and README_END in text, "README.md lacks the capability table's markers"
    shown = text[text.index(README_BEGIN):text.index(README_END) + len(README_END)]
    assert shown == capability_markdown(), ("the README's capability table is stale: paste "
                                            "workbench.analysis.capabilities.capability_markdown() between the markers")


@pytest.mark.parametrize("family", FAMILIES, ids=[f.__name__ for f in FAMILIES])
def test_each_adapter_fills_exactly_the_parts_its_family_declares(models, family):
    model, _ = models[family.label]
    assert isinstance(model, family)
    assert model.adapter.parts == family.parts and family.parts <= set(PARTS)
    adapter = model.adapter
    assert set(adapter.patterns) <= {"self", "cross", "encoder"} and adapter.audio_attention in adapter.patterns
    assert all(adapter.patterns[kind].format(0) in adapter.points for kind in adapter.patterns)
    assert len(adapter.sequence.layers) == len(adapter.sequence.head_inputs) > 0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:this is the base Qwen-Audio")   # nano is the base model; Chat says so
@pytest.mark.parametrize("analysis", list(ANALYSES))
@pytest.mark.parametrize("family", FAMILIES, ids=[f.__name__ for f in FAMILIES])
def test_each_cell_works_or_says_it_is_not_supported(models, family, analysis):
    model, prompt = models[family.label]
    if supports(family, analysis):
        assert CALLS[analysis](model, prompt) is not None
    else:
        with pytest.raises(NotSupportedError, match=rf"{analysis} is not supported for the {model.family} family"):
            CALLS[analysis](model, prompt)


def test_a_non_model_is_refused_by_name():
    with pytest.raises(UnsupportedModelError, match="cannot run align on a str: give a model workbench.load returns"):
        require("whisper-base", "align")
