"""ipywidgets explorers for JupyterLab: a layer/head browser over a Trace, and a tag editor.

    AttentionBrowser(t)                 # pick pattern kind, layer, head, query → the figure redraws
    TagEditor(model, clip)              # one dropdown per tag slot → generate, output text, audio strip

Each is a small object holding its controls as attributes; displaying it shows its `widget`.
Figures are rendered to PNG into an `ipywidgets.Image`, so the same code runs in JupyterLab, in a
headless test (set a control's `.value`, read `.figure` / `.image.value`) and in saved notebooks.
"""
from __future__ import annotations

import io
from typing import Any

import ipywidgets as widgets
from IPython.display import display
from matplotlib.figure import Figure

from workbench.analysis.capabilities import require
from workbench.analysis.trace import Trace, trace
from workbench.errors import TagPromptError
from workbench.figures.attention import plot_attention_pattern, plot_audio_attention
from workbench.figures.style import publication_style
from workbench.tags import SLOT_VALUES, TagPrompt

MEAN = "mean"       # the head control's value for the mean over heads
NONE = "(none)"     # a tag slot left out of the prompt
EDITABLE_SLOTS = ("start", "audio_lang", "task", "text_lang", "timestamps", "instructions")


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    with publication_style():
        fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


class AttentionBrowser:
    """Browse the patterns of a Trace: kind (self / cross / encoder), layer, head (or the mean) and,
    for self- and cross-attention, the query row whose attention over the audio is drawn."""

    def __init__(self, trace_: Trace, *, audio: int = 0):
        kinds = [what for what in ("self", "cross", "encoder") if trace_.layers(what)]
        if not kinds:
            raise ValueError("the trace holds no attention pattern: trace with capture='…attn.pattern' "
                             f"(names: {', '.join(n for n in trace_.names() if n.endswith('pattern'))[:200]}…)")
        self.trace, self.audio = trace_, audio
        labels = trace_.positions["label"].to_numpy()
        first = trace_.audio_attention if trace_.audio_attention in kinds else kinds[0]
        self.kind = widgets.ToggleButtons(options=kinds, value=first, description="attention")
        self.layer = widgets.Dropdown(description="layer")
        self.head = widgets.Dropdown(description="head")
        self.query = widgets.Dropdown(options=[(f"{int(p)}: {labels[p]}", int(p)) for p in trace_.rows],
                                      value=int(trace_.rows[-1]), description="query")
        self.view = widgets.ToggleButtons(options=["audio strip", "pattern"], value="audio strip",
                                          description="view")
        self.image = widgets.Image(format="png")
        self.figure: Figure | None = None
        self._sync_layers()
        for control in (self.layer, self.head, self.query, self.view):
            control.observe(lambda _: self.redraw(), names="value")
        self.kind.observe(lambda _: (self._sync_layers(), self.redraw()), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.kind, self.view]),
                                    widgets.HBox([self.layer, self.head, self.query]), self.image])
        self.redraw()

    def _sync_layers(self) -> None:
        self._quiet = True
        layers = self.trace.layers(self.kind.value)
        pattern = self.trace.pattern(layers[0], self.kind.value)
        n_heads = (pattern[self.audio] if isinstance(pattern, list) else pattern).shape[0]
        heads = list(range(n_heads)) if self.trace.heads is None else [int(h) for h in self.trace.heads]
        self.layer.options, self.layer.value = layers, layers[-1]
        self.head.options, self.head.value = [MEAN] + heads, MEAN
        self.query.disabled = self.view.disabled = self.kind.value != self.trace.audio_attention
        self._quiet = False

    def redraw(self) -> None:
        if getattr(self, "_quiet", False):
            return
        head = None if self.head.value == MEAN else self.head.value
        what, layer = self.kind.value, self.layer.value
        # A pattern that does not reach the audio (Whisper's decoder self-attention) has no audio strip.
        if what != self.trace.audio_attention or self.view.value == "pattern":
            fig = plot_attention_pattern(self.trace, layer, head, what=what)
        else:
            fig = plot_audio_attention(self.trace, [self.query.value], layers=[layer],
                                             heads=None if head is None else [head], audio=self.audio)
        self.figure = fig
        self.image.value = _png(fig)

    def _ipython_display_(self) -> None:
        display(self.widget)


class TagEditor:
    """One dropdown per tag slot; every change re-runs the model (greedy generation), shows the
    output text and the output tokens' attention over the audio as a strip under the mel."""

    def __init__(self, model: Any, audio: Any, prompt: TagPrompt | None = None, *, max_new_tokens: int = 16,
                 layers: Any = None):
        prompt = prompt or TagPrompt()
        self.model, self.audio, self.max_new_tokens, self.layers = model, audio, max_new_tokens, layers
        self.slots: dict[str, widgets.Dropdown] = {}
        for slot in EDITABLE_SLOTS:
            values = [v for v in SLOT_VALUES[slot] if v != "question"]   # a question needs its text: not here
            current = getattr(prompt, slot)
            current = (current[0] if current else None) if slot == "instructions" else current
            self.slots[slot] = widgets.Dropdown(options=[NONE, *values], value=current or NONE, description=slot)
        self.prompt_text = widgets.HTML()
        self.output_text = widgets.Textarea(description="output", disabled=True,
                                            layout=widgets.Layout(width="95%", height="4em"))
        self.image = widgets.Image(format="png")
        self.figure: Figure | None = None
        self.trace: Trace | None = None
        for control in self.slots.values():
            control.observe(lambda _: self.run(), names="value")
        self.widget = widgets.VBox([widgets.HBox(list(self.slots.values())[:3]),
                                    widgets.HBox(list(self.slots.values())[3:]),
                                    self.prompt_text, self.output_text, self.image])
        self.run()

    def prompt(self) -> TagPrompt:
        values = {slot: (None if control.value == NONE else control.value) for slot, control in self.slots.items()}
        values["instructions"] = () if values["instructions"] is None else (values["instructions"],)
        return TagPrompt(**values)

    def run(self) -> None:
        try:
            prompt = self.prompt()
        except TagPromptError as error:
            self.prompt_text.value = f"<b>invalid prompt</b>: {error}"
            return
        self.prompt_text.value = f"<code>{_escape(prompt.render())}</code>"
        adapter = require(self.model, "trace")
        capture = adapter.patterns[adapter.audio_attention].format("*")
        cross = adapter.audio_attention == "cross"
        self.trace = trace(self.model, prompt, self.audio, capture=capture, layers=self.layers,
                           generate=self.max_new_tokens, rows=["last", "output"],
                           cols=None if cross else "audio", logits="last")
        generation = self.trace.generation
        self.output_text.value = generation.text if generation is not None else ""
        query = "output" if generation is not None and generation.ids else "last"
        fig = plot_audio_attention(self.trace, query, title=f"output: {self.output_text.value.strip()[:80]!r}")
        self.figure = fig
        self.image.value = _png(fig)

    def _ipython_display_(self) -> None:
        display(self.widget)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
