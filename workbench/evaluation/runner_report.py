"""The result of an evaluation run: metrics against the paper, as a table, markdown or a figure.

`EvalResult` is what `evaluate()` returns and what `EvalResult.load(out)` reads back from a run's
folder (`summary.json` + `records.jsonl`), so a finished run can be reported without the model.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.evaluation.items import Metric

PAPER = "Qwen-Audio (paper)"
PREVIOUS = "previous best"
PREVIOUS_BY = "previous best by"
COLUMNS = ("metric", "recipe", "value", PAPER, PREVIOUS, PREVIOUS_BY, "higher is better", "note")


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _format(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"


@dataclass(frozen=True)
class EvalResult:
    """Metrics, per-item records and the run summary of one evaluation."""

    task: str
    metrics: tuple[Metric, ...]
    records: tuple[dict[str, Any], ...]
    summary: dict[str, Any]
    paper: dict[str, float] = field(default_factory=dict)
    previous_best: dict[str, tuple[float, str]] = field(default_factory=dict)
    out: Path | None = None

    @classmethod
    def load(cls, out: str | Path) -> EvalResult:
        """Read a finished run's folder."""
        out = Path(out)
        summary = json.loads((out / "summary.json").read_text())
        records_file = out / "records.jsonl"
        records = tuple(json.loads(line) for line in records_file.read_text().splitlines() if line.strip())
        return cls.from_summary(summary, records, out)

    @classmethod
    def from_summary(cls, summary: dict[str, Any], records: tuple[dict[str, Any], ...],
                     out: Path | None = None) -> EvalResult:
        return cls(task=summary["task"]["name"], metrics=tuple(Metric(**m) for m in summary["metrics"]),
                   records=tuple(records), summary=summary, paper=dict(summary.get("paper", {})),
                   previous_best={k: (v[0], v[1]) for k, v in summary.get("previous_best", {}).items()}, out=out)

    # --- views ----------------------------------------------------------------------------
    @property
    def outputs(self) -> list[str]:
        return [r["output"] for r in self.records]

    def metric(self, name: str, recipe: str = "official") -> Metric:
        for m in self.metrics:
            if m.name == name and m.recipe == recipe:
                return m
        raise KeyError(f"no metric {name!r} with recipe {recipe!r}; have "
                       f"{[(m.name, m.recipe) for m in self.metrics]}")

    def rows(self) -> list[dict[str, Any]]:
        """One row per metric, with the paper's Qwen-Audio number and the previous best beside it."""
        rows = []
        for m in self.metrics:
            previous = self.previous_best.get(m.name)
            rows.append({"metric": m.name, "recipe": m.recipe, "value": _number(m.value),
                         PAPER: _number(self.paper.get(m.name)),
                         PREVIOUS: _number(previous[0]) if previous else None,
                         PREVIOUS_BY: previous[1] if previous else None,
                         "higher is better": m.higher_is_better, "note": m.note})
        return rows

    def to_pandas(self):
        """Columns: metric, recipe, value, Qwen-Audio (paper), previous best, previous best by,
        higher is better, note."""
        import pandas as pd
        return pd.DataFrame(self.rows(), columns=list(COLUMNS))

    def records_to_pandas(self):
        """One row per item: id, prompt, output, reference, the per-item scores (flattened)…"""
        import pandas as pd
        return pd.json_normalize(list(self.records))

    def to_markdown(self) -> str:
        """The table against the paper, then the run's counts, timing and batch check."""
        s = self.summary
        lines = [f"**{self.task}** — {s['model']['source']} ({s['model']['family']}), "
                 f"{s['counts']['items']} items", "",
                 f"| metric | recipe | value | {PAPER} | {PREVIOUS} |", "|---|---|---:|---:|---:|"]
        notes = []
        for row in self.rows():
            previous = _format(row[PREVIOUS]) + (f" ({row[PREVIOUS_BY]})" if row[PREVIOUS_BY] else "")
            arrow = "↑" if row["higher is better"] else "↓"
            mark = ""
            if row["note"]:
                notes.append(row["note"])
                mark = f" [{len(notes)}]"
            lines.append(f"| {row['metric']} {arrow} | {row['recipe']} | {_format(row['value'])}{mark} | "
                         f"{_format(row[PAPER])} | {previous} |")
        lines.append("")
        lines += [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
        counts, timing, check = s["counts"], s["timing"], s["batch_check"]
        lines.append(f"Generated {counts['generated']}, reused {counts['reused']} from earlier runs, "
                     f"{counts['truncated']} hit max_new_tokens={s['settings']['max_new_tokens']}; "
                     f"{timing['items_per_second']:.2f} items/s over {counts['ranks']} process(es); "
                     f"batch check: {check['status']}.")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        values = ", ".join(f"{m.name}={_format(_number(m.value))} ({m.recipe})" for m in self.metrics)
        return f"<EvalResult {self.task}: {len(self.records)} items; {values}>"

    def plot(self, *, ax=None):
        """Our value per recipe beside the paper's Qwen-Audio and the previous best, one panel per
        metric (their scales differ: WER %, BLEU, accuracy…). Returns the matplotlib Figure."""
        import matplotlib.pyplot as plt

        names = list(dict.fromkeys(m.name for m in self.metrics))
        if ax is not None and len(names) != 1:
            raise ValueError(f"ax= draws one panel, but the run has {len(names)} metrics ({names}): omit ax")
        if ax is None:
            fig, axes = plt.subplots(1, max(1, len(names)), figsize=(2.6 * max(1, len(names)) + 0.6, 2.8),
                                     squeeze=False)
            axes = list(axes[0])
        else:
            fig, axes = ax.figure, [ax]
        for panel, name in zip(axes, names):
            bars = [(f"ours\n{m.recipe}", _number(m.value), "C0") for m in self.metrics if m.name == name]
            if name in self.paper:
                bars.append(("Qwen-Audio\n(paper)", _number(self.paper[name]), "C1"))
            if name in self.previous_best:
                bars.append((f"prev. best\n{self.previous_best[name][1]}", _number(self.previous_best[name][0]),
                             "C7"))
            labels = [b[0] for b in bars]
            heights = [0.0 if b[1] is None else b[1] for b in bars]
            drawn = panel.bar(range(len(bars)), heights, color=[b[2] for b in bars])
            for rect, (_, value, _) in zip(drawn, bars):
                panel.annotate(_format(value), (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                               ha="center", va="bottom", fontsize=7)
            panel.set_xticks(range(len(bars)), labels, fontsize=7)
            higher = next(m.higher_is_better for m in self.metrics if m.name == name)
            panel.set_title(f"{name} ({'higher' if higher else 'lower'} is better)", fontsize=9)
            panel.spines[["top", "right"]].set_visible(False)
        fig.suptitle(f"{self.task}: {self.summary['model']['source']}", fontsize=9)
        fig.tight_layout()
        return fig
