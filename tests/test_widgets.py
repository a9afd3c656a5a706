"""Widget callbacks without a browser: set a control's value, check what was redrawn or re-run."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import workbench
from workbench.analysis.trace import trace
from workbench.tags import TagPrompt, preset
from workbench.widgets import MEAN, NONE, AttentionBrowser, TagEditor


@pytest.fixture(autouse=True)
def no_glyph_warnings():
    with warnings.catch_warnings():   # the random model writes CJK tokens that DejaVu Sans lacks
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        yield


@pytest.fixture(scope="module")
def model(tiny_dir: Path):
    return workbench.load(tiny_dir / "checkpoint")


@pytest.fixture(scope="module")
def clip(tiny_dir: Path) -> str:
    return str(tiny_dir / "clips" / "1272-128104-0000.flac")


def test_browser_redraws_on_head_layer_query_and_kind(model, clip):
    t = trace(model, preset("librispeech"), clip, generate=2,
              capture=["llm.layers.*.attn.pattern", "encoder.blocks.0.attn.pattern"])
    browser = AttentionBrowser(t)
    assert browser.kind.options == ("self", "encoder")
    assert browser.layer.options == (0, 1) and browser.layer.value == 1
    assert browser.head.options == (MEAN, 0, 1, 2, 3) and browser.query.value == 155
    first = browser.image.value
    assert first[:4] == b"\x89PNG"

    browser.head.value = 2
    assert browser.image.value != first
    assert browser.figure.axes[1].get_title().endswith("layers 1 · heads 2")
    browser.query.value = 150
    assert browser.figure.axes[1].get_title().startswith("'<|transcribe|>' → audio")
    browser.view.value = "pattern"
    assert browser.figure.axes[0].get_title() == "llm layer 1 self-attention · head 2"
    browser.kind.value = "encoder"
    assert browser.layer.options == (0,) and browser.head.value == MEAN
    assert browser.figure.axes[0].get_title().startswith("encoder layer 0 · mean over heads")
    assert browser.query.disabled


def test_browser_needs_patterns(model, clip):
    with pytest.raises(ValueError, match="holds no attention pattern"):
        AttentionBrowser(trace(model, preset("librispeech"), clip, capture="llm.embed"))


def test_tag_editor_reruns_the_model_on_every_slot_change(model, clip):
    editor = TagEditor(model, clip, preset("librispeech"), max_new_tokens=3)
    assert [c.description for c in editor.slots.values()] == ["start", "audio_lang", "task", "text_lang",
                                                              "timestamps", "instructions"]
    assert editor.prompt() == preset("librispeech")
    assert editor.output_text.value == model.generate(preset("librispeech"), clip, max_new_tokens=3).text
    first_image = editor.image.value

    editor.slots["task"].value = "caption"
    editor.slots["start"].value = NONE
    changed = TagPrompt(start=None, task="caption")
    assert editor.prompt() == changed
    assert "&lt;|caption|&gt;" in editor.prompt_text.value and "startoftranscript" not in editor.prompt_text.value
    assert editor.output_text.value == model.generate(changed, clip, max_new_tokens=3).text
    assert editor.trace.generation.text == editor.output_text.value
    assert editor.image.value != first_image
    assert editor.figure.axes[1].get_title().startswith("mean of 3 queries → audio")


def test_tag_editor_reports_an_invalid_prompt(model, clip, monkeypatch):
    editor = TagEditor(model, clip, max_new_tokens=2)
    before = editor.output_text.value
    # The dropdowns offer only valid values; a combination TagPrompt refuses is shown, not raised.
    monkeypatch.setattr(editor, "prompt", lambda: TagPrompt(instructions=("not_a_tag",)))
    editor.run()
    assert editor.prompt_text.value.startswith("<b>invalid prompt</b>: instructions contains 'not_a_tag'")
    assert editor.output_text.value == before
