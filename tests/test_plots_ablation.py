"""plot_ablation: one shared scale per block of columns, divergences never shown below zero."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from matplotlib.figure import Figure

from workbench.figures.ablation import plot_ablation


@dataclass
class Row:
    label: str
    kl: float
    js: float
    scores: dict[str, float]
    token_logprobs: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def logprob(self, target: str) -> float:
        return self.scores[target]


@dataclass
class Result:
    rows: tuple[Row, ...]
    targets: tuple[str, ...]

    @property
    def base(self) -> Row:
        return self.rows[0]

    def label_shares(self) -> np.ndarray:
        p = np.exp([[row.logprob(t) for t in self.targets] for row in self.rows])
        return p / p.sum(axis=1, keepdims=True)


def result() -> Result:
    # KL of "swap" is float-rounding noise below 0; JS is much smaller than KL; the two targets'
    # Δ log p differ by 10×: a per-column scale would colour all of them alike.
    rows = (Row("base", 0.0, 0.0, {"a": -1.0, "b": -3.0}),
            Row("drop task", 2.0, 0.1, {"a": -5.0, "b": -3.5}),
            Row("swap", -5e-8, 1e-9, {"a": -1.0, "b": -2.6}))
    return Result(rows, ("a", "b"))


def images(fig: Figure):
    heat = fig.axes[0]
    return heat, heat.get_images()


def test_divergences_share_one_scale_from_zero_and_deltas_one_centred_scale():
    fig = plot_ablation(result())
    heat, (div, delta) = images(fig)
    assert [t.get_text() for t in heat.get_xticklabels()] == ["KL", "JS", "Δ log p(a)", "Δ log p(b)"]
    assert div.get_array().shape == (3, 2) and delta.get_array().shape == (3, 2)
    assert div.norm.vmin == 0 and div.norm.vmax == 2.0          # the largest KL or JS, shared by both
    assert delta.norm.vmin == -4.0 and delta.norm.vmax == 4.0   # the largest |Δ log p| of any target
    # JS 0.1 is pale next to KL 2.0 (one scale), and "b"'s Δ 0.4 is pale next to "a"'s −4.
    assert div.norm(0.1) < 0.1 and abs(delta.norm(0.4) - 0.5) < 0.06
    # the blocks sit side by side over their own columns
    assert tuple(div.get_extent()[:2]) == (-0.5, 1.5) and tuple(delta.get_extent()[:2]) == (1.5, 3.5)


def test_negative_kl_from_rounding_is_drawn_and_written_as_zero():
    fig = plot_ablation(result())
    heat, (div, _) = images(fig)
    assert div.get_array().min() == 0.0
    divergence_texts = [t.get_text() for t in heat.texts if t.get_position()[0] in (0, 1)]
    assert len(divergence_texts) == 6 and not any(text.startswith("-") for text in divergence_texts)
    kl_texts = [t.get_text() for t in heat.texts if t.get_position()[0] == 0]
    assert kl_texts == ["0", "2", "0"]
    assert len(fig.axes[1].patches) == 3 * 2     # the label-share bars: rows × targets


def test_colorbars_name_units_and_the_first_answer_position():
    labels = [ax.get_xlabel() for ax in plot_ablation(result()).axes[2:]]
    assert labels == ["KL, JS at the first answer position (nats)", "Δ log p of the whole target (nats)"]
