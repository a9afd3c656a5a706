"""Linear probes: which layer carries a label linearly, with a held-out accuracy and its CI.

    result = probe(model, items, "encoder.blocks.{}.resid_post", labels=lambda item: item.fields["pitch"] % 12)
    result.to_pandas()     # per layer: held-out accuracy, bootstrap CI, chance
    result.plot()          # accuracy per layer with its CI band and the chance line

Each item is traced once with the captured points of every layer (`point` is a name template,
"{}" the layer); the activations are averaged over the chosen positions (the audio tokens, or the
encoder frames of an encoder point) into one vector per item and layer. One multinomial logistic
regression (scikit-learn, on standardised features) is fitted per layer on the training items and
scored on the held-out items: the split is by item and seeded, and with `groups` (a speaker, a
voice) no group is in both. The CI is the seeded bootstrap over held-out items' correctness
(`workbench.analysis.stats.mean_ci`); chance is the held-out accuracy of always answering the
training split's most frequent label (1 / number of classes when balanced).

Items: synthetic corpus items (`workbench.synth.tasks.Item`, e.g. from
`workbench.evaluation.replicas.synthetic_item`: their audio and tag prompt; labels and groups may
name one of their `fields`), (prompt, audio) pairs, or bare audios with `prompt=`.
`probe_features` fits the same probes on activations you already have (layers × items × width).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from workbench.analysis.capabilities import require
from workbench.analysis.stats import RESAMPLES, mean_ci
from workbench.analysis.trace import trace
from workbench.errors import TraceRequestError
from workbench.figures.probes import plot_probe
from workbench.models.base import audio_references

LabelSource = Sequence[Any] | Callable[[Any], Any] | str


@dataclass(frozen=True)
class ProbeResult:
    """Held-out accuracy of one linear probe per layer."""

    point: str                  # the name template probed
    layers: list[str]           # layer indices as strings
    accuracy: np.ndarray        # (layers,)
    ci_low: np.ndarray          # (layers,)
    ci_high: np.ndarray         # (layers,)
    chance: float               # held-out accuracy of the training split's most frequent label
    classes: list[Any]          # every label seen
    n_train: int
    n_test: int
    test_items: np.ndarray      # indices of the held-out items
    predictions: np.ndarray     # (layers, n_test) predicted labels
    truth: np.ndarray           # (n_test,) their labels
    grouped: bool               # whether the split kept groups apart

    def to_pandas(self) -> pd.DataFrame:
        """One row per layer: accuracy, its CI, chance and uniform (1 / classes) levels, split sizes."""
        return pd.DataFrame({"layer": self.layers, "accuracy": self.accuracy, "ci_low": self.ci_low,
                             "ci_high": self.ci_high, "chance": self.chance, "uniform": 1 / len(self.classes),
                             "n_train": self.n_train, "n_test": self.n_test})

    def best_layer(self) -> str:
        return self.layers[int(np.argmax(self.accuracy))]

    def plot(self, **options: Any) -> Figure:
        return plot_probe(self, **options)


def probe(model: Any, items: Sequence[Any], point: str = "llm.layers.{}.resid_post", *,
          labels: LabelSource, groups: LabelSource | None = None, prompt: Any = None,
          positions: Any = "audio", layers: Sequence[int] | None = None, test_size: float = 0.25,
          seed: int = 0, n_boot: int = RESAMPLES, C: float = 1.0) -> ProbeResult:
    """Fit and score a linear probe for `labels` on `point` at every layer (module docstring).

    point: a name template with "{}" for the layer (`capture_names(model)` lists the names), e.g.
      "llm.layers.{}.resid_post" or "encoder.blocks.{}.resid_post".
    labels / groups: one per item, a function of the item, or the name of a synthetic item's field.
    positions: sequence points only: the positions averaged ("audio": the audio tokens without their
      bos / eos; or any `trace` row selector, e.g. "last"); encoder points average their frames.
    layers: the layers to probe (default: all the template has).
    test_size, seed: the held-out share of items (or of groups) and the split's seed.
    n_boot: bootstrap resamples of the CI; C: the inverse L2 strength of the logistic regression.
    """
    if "{}" not in point:
        raise TraceRequestError(f"point={point!r}: give a name template with '{{}}' for the layer, e.g. "
                                "'llm.layers.{}.resid_post' or 'encoder.blocks.{}.resid_post'")
    offered = require(model, "probe").points
    available = [i for i in range(len(offered)) if point.format(i) in offered]
    if not available:
        raise TraceRequestError(f"point={point!r} names nothing this model offers; e.g. "
                                f"{', '.join(n for n in offered if n.endswith('resid_post'))[:200]} "
                                "(capture_names(model) lists every name)")
    chosen = available if layers is None else [int(i) for i in layers]
    missing = [i for i in chosen if i not in available]
    if missing:
        raise TraceRequestError(f"layers={list(layers or [])}: {missing} not among {point!r}'s layers {available}")
    items = list(items)
    y = _per_item(labels, items, "labels")
    g = None if groups is None else _per_item(groups, items, "groups")
    names = [point.format(i) for i in chosen]
    per_audio = offered[names[0]].per_audio
    features = np.zeros((len(names), len(items), offered[names[0]].width), dtype=np.float32)
    audio_tokens = isinstance(positions, str) and positions == "audio"
    if audio_tokens and not per_audio and model.adapter.audio_attention != "self":
        raise TraceRequestError(f"positions='audio': the {model.family} family's {point.split('.')[0]} has no audio "
                                "positions (it reads the audio by cross-attention): give positions='last' (or "
                                "another row selector), or probe an encoder point")
    for j, item in enumerate(items):
        item_prompt, audio = _prompt_and_audio(item, prompt, j)
        t = trace(model, item_prompt, audio, capture=names, logits="last", rows=None if per_audio else positions)
        # "audio" selects the audio group; the probe averages the audio tokens, not their bos / eos
        keep = torch.as_tensor(np.flatnonzero((t.positions["kind"].iloc[t.rows] == "audio").to_numpy()))
        for i, name in enumerate(names):
            x = torch.cat(t[name]) if per_audio else t[name][keep] if audio_tokens else t[name]
            features[i, j] = x.float().mean(0).numpy()
    return probe_features(features, y, groups=g, layers=[str(i) for i in chosen], point=point,
                          test_size=test_size, seed=seed, n_boot=n_boot, C=C)


def probe_features(features: np.ndarray, labels: Sequence[Any], *, groups: Sequence[Any] | None = None,
                   layers: Sequence[str] | None = None, point: str = "features", test_size: float = 0.25,
                   seed: int = 0, n_boot: int = RESAMPLES, C: float = 1.0) -> ProbeResult:
    """The probes of `probe` on given activations: `features` (layers, items, width)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 3 or not np.all(np.isfinite(x)):
        raise ValueError(f"features of shape {x.shape}: give finite values of shape (layers, items, width)")
    y = np.asarray(labels, dtype=object)
    if len(y) != x.shape[1]:
        raise ValueError(f"{len(y)} labels for {x.shape[1]} items: give one label per item")
    classes = sorted(set(y.tolist()), key=str)
    if len(classes) < 2:
        raise ValueError(f"every item has the label {classes!r}: a probe needs at least two classes")
    layers = [str(i) for i in range(x.shape[0])] if layers is None else list(layers)
    train, test = _split(y, groups, test_size, seed)
    y_train, y_test = y[train].astype(str), y[test].astype(str)   # one dtype for sklearn (ints and strs alike)
    if len(set(y_train)) < 2:
        raise ValueError(f"the training split has only the label {y_train[0]!r}: give more items per label, or "
                         "another seed / test_size")
    majority = DummyClassifier(strategy="most_frequent").fit(x[0, train], y_train)
    chance = float((majority.predict(x[0, test]) == y_test).mean())
    predictions, rows = [], []
    for layer in range(x.shape[0]):
        classifier = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        predicted = classifier.fit(x[layer, train], y_train).predict(x[layer, test])
        predictions.append(predicted)
        rows.append(mean_ci((predicted == y_test).astype(float), resamples=n_boot, seed=seed))
    lookup = {str(c): c for c in classes}
    return ProbeResult(point=point, layers=layers, accuracy=np.array([r.mean for r in rows]),
                       ci_low=np.array([r.low for r in rows]), ci_high=np.array([r.high for r in rows]),
                       chance=chance, classes=classes, n_train=len(train), n_test=len(test), test_items=test,
                       predictions=np.array([[lookup[p] for p in row] for row in predictions], dtype=object),
                       truth=y[test], grouped=groups is not None)


# ---------------------------------------------------------------------------------------------


def _split(y: np.ndarray, groups: Sequence[Any] | None, test_size: float,
           seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out items: by group when groups are given, else stratified by label where every label
    has two items or more (each label then in both parts), else a plain shuffle; always seeded."""
    if not 0 < test_size < 1:
        raise ValueError(f"test_size={test_size!r}: give the held-out share of items, between 0 and 1 (e.g. 0.25)")
    index = np.arange(len(y))
    if groups is not None:
        groups = np.asarray([str(g) for g in groups])
        if len(groups) != len(y):
            raise ValueError(f"{len(groups)} groups for {len(y)} items: give one group per item")
        if len(set(groups)) < 2:
            raise ValueError("every item is in the same group: a grouped split needs two groups or more")
        train, test = next(GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
                           .split(index, groups=groups))
        return train, test
    counts = pd.Series(y.astype(str)).value_counts()
    n_test = int(np.ceil(test_size * len(y)))
    stratify = y.astype(str) if counts.min() >= 2 and len(counts) <= min(n_test, len(y) - n_test) else None
    if len(y) < 4:
        raise ValueError(f"{len(y)} items: a held-out probe needs at least 4 (a few per label)")
    train, test = train_test_split(index, test_size=test_size, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(test)


def _per_item(source: LabelSource, items: list[Any], what: str) -> list[Any]:
    if isinstance(source, str):
        missing = [i for i, item in enumerate(items) if source not in getattr(item, "fields", {})]
        if missing:
            raise ValueError(f"{what}={source!r} names a field that item {missing[0]} lacks: give a synthetic item "
                             "with that field (workbench.synth), a list with one value per item, or a function")
        return [item.fields[source] for item in items]
    values = [source(item) for item in items] if callable(source) else list(source)
    if len(values) != len(items):
        raise ValueError(f"{len(values)} {what} for {len(items)} items: give one per item")
    return values


def _prompt_and_audio(item: Any, prompt: Any, index: int) -> tuple[Any, Any]:
    if hasattr(item, "audios") and hasattr(item, "prompt"):     # a synthetic corpus item
        if not item.prompt:
            raise ValueError(f"item {index} ({item.task}) has no tag prompt (a chat item): pass (prompt, audio) pairs")
        audios = list(item.audios)
        return (prompt if prompt is not None else audio_references(audios) + item.prompt), audios
    if isinstance(item, tuple) and len(item) == 2 and not isinstance(item[1], (int, float)):
        return item
    if prompt is None:
        raise ValueError(f"item {index} is an audio without a prompt: pass prompt= (e.g. wb.preset('librispeech')), "
                         "or give (prompt, audio) pairs")
    return prompt, item

