"""The per-task figures draw the numbers they are given: counts, points, bins, bar heights, spans."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from workbench.figures.tasks import (
    OTHER,
    SPAN_GID,
    confusion_counts,
    plot_bars,
    plot_captions,
    plot_confusion,
    plot_errors_by_length,
    plot_histogram,
    plot_spans_on_mel,
    spans_table,
)

REFERENCES = ["cafe", "park", "park", "street", "beach", "park"]
OUTPUTS = ["cafe", "park", "cafe", "street", "sigh", "park"]
LABELS = ["beach", "cafe", "park", "street"]


def test_confusion_counts_put_every_item_in_one_cell():
    counts = confusion_counts(REFERENCES, OUTPUTS, LABELS)
    assert list(counts.index) == LABELS and list(counts.columns) == LABELS + [OTHER]
    assert counts.to_numpy().sum() == len(REFERENCES)
    assert counts.loc["park", "park"] == 2 and counts.loc["park", "cafe"] == 1
    assert counts.loc["beach", OTHER] == 1 and counts.loc["beach", "beach"] == 0
    # no OTHER column when every output is a label; labels default to the sorted references
    assert list(confusion_counts(["b", "a"], ["a", "a"]).columns) == ["a", "b"]


def test_confusion_matrix_image_equals_the_counts():
    fig = plot_confusion(REFERENCES, OUTPUTS, LABELS)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    counts = confusion_counts(REFERENCES, OUTPUTS, LABELS).to_numpy()
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), counts)
    written = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text()) for t in ax.texts}
    assert written == {(i, j): counts[i, j] for i, j in np.ndindex(counts.shape)}
    assert [t.get_text() for t in ax.get_xticklabels()] == LABELS + [OTHER]
    assert [t.get_text() for t in ax.get_yticklabels()] == LABELS
    assert "4/6 correct" in ax.get_title()


def test_confusion_refuses_mismatched_or_unknown_labels():
    with pytest.raises(ValueError, match="3 references for 2 outputs"):
        confusion_counts(["a", "b", "c"], ["a", "b"])
    with pytest.raises(ValueError, match=r"\['c'\] are not in labels"):
        confusion_counts(["a", "c"], ["a", "a"], labels=["a", "b"])


def test_errors_by_length_plots_each_utterance_and_the_corpus_rate():
    lengths, errors = [8, 7, 3, 16], [1, 0, 0, 37]
    fig = plot_errors_by_length(lengths, errors, labels=["a", "b", "c", "d"])
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), np.column_stack([lengths, errors]))
    diagonal, corpus = ax.lines
    x, y = corpus.get_data()
    assert y[1] / x[1] == pytest.approx(sum(errors) / sum(lengths))
    assert np.allclose(*diagonal.get_data())
    assert f"{100 * 38 / 34:.1f} %" in corpus.get_label()
    assert [t.get_text() for t in ax.texts] == ["d"]          # only the point above 100 % is named


def test_histogram_bins_the_values_and_draws_the_marks():
    values = [10, 50, 200, 700, None, 90, float("nan")]
    fig = plot_histogram(values, bins=[0, 100, 200, 800], marks={"paper": 51.5, "previous": 60.3})
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [3, 0, 2]
    assert [line.get_xdata()[0] for line in ax.lines] == [51.5, 60.3]
    assert "2 without a value left out" in ax.get_title()
    outside = plot_histogram([1, 5, 50], bins=[0, 10], title="shifts").axes[0]
    assert [p.get_height() for p in outside.patches] == [2] and outside.get_title() == "shifts (1 outside the bins)"


def test_bars_have_the_table_heights_and_missing_values_are_dashes():
    table = pd.DataFrame({"nano": [4.5, 6.4], "paper": [25.1, np.nan]}, index=["en→de", "zh→en"])
    ax = plot_bars(table, ylabel="BLEU").axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == [4.5, 6.4, 25.1, 0.0]
    assert [t.get_text() for t in ax.texts] == ["4.5", "6.4", "25.1", "—"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["en→de", "zh→en"]
    single = plot_bars({"yes/no": 0.5, "open": 1.0}).axes[0]
    assert [p.get_height() for p in single.patches] == [0.5, 1.0]


def test_captions_show_output_references_and_scores():
    fig = plot_captions(["A dog barks."], [["A dog barks twice.", "A dog barking.", "unused"]], [42.0])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["“A dog barks.”", "ref: A dog barks twice.", "ref: A dog barking."]
    assert fig.axes[1].patches[0].get_width() == 42.0
    cjk = plot_captions(["狗叫 twice"], [["A dog barks."]])            # no glyph warning, no tofu
    assert cjk.axes[0].texts[0].get_text() == "“\u25af\u25af twice”"
    with pytest.raises(ValueError, match="one of each per clip"):
        plot_captions(["a"], [["b"], ["c"]])


def test_spans_sit_at_their_times_and_undrawable_labels_get_numbers():
    mel = np.zeros((80, 3000))
    rows = {"reference": [("熊", 0.36, 0.86), ("the", 0.9, 1.5)], "model": [("游", 0.9, 0.83)]}
    fig = plot_spans_on_mel(mel, rows, seconds=2.0)
    mel_ax, ref_ax, model_ax = fig.axes
    assert mel_ax.images[0].get_array().shape == (80, 200) and mel_ax.get_xlim() == (0.0, 2.0)
    boxes = [(p.get_x(), p.get_width()) for p in ref_ax.patches if p.get_gid() == SPAN_GID]
    assert boxes == [pytest.approx((0.36, 0.5)), pytest.approx((0.9, 0.6))]
    assert [t.get_text() for t in ref_ax.texts] == ["#1", "the"]      # DejaVu Sans has no CJK glyphs
    [backwards] = model_ax.patches
    assert (backwards.get_x(), backwards.get_width()) == pytest.approx((0.83, 0.07)) and backwards.get_hatch()
    table = spans_table(rows)
    assert list(table["drawn as"]) == ["#1", "the", "#1"] and list(table["backwards"]) == [False, False, True]


def test_figures_accept_a_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_confusion(["a"], ["a"], ax=ax) is fig
    assert plot_histogram([1, 2], ax=ax) is fig
