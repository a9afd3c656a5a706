"""Figures: pure drawing functions, each returning a matplotlib `Figure`, every time axis in seconds.

They take arrays, or a result object read through its fields (a `Trace`, a `PatchingResult`, …),
and import only the publication style and the audio constants: the analysis layer imports them
for its results' `.plot()`, never the other way round.

    clip.py           plot_waveform, plot_mel (the 40 ms audio-token grid on top)
    attention.py      encoder attention, attention over the audio, token × time maps, attention
                      mass per layer, a pattern as a heatmap, the logit lens
    interventions.py  patching and knockout heatmaps, word alignment, the alignment-head ranking
    ablation.py       tag ablation: variants × measures, label shares
    attribution.py    captum attributions over tag slots and over audio time
    tasks.py          per-task evaluation figures: confusion matrix, errors by length, histograms,
                      grouped bars, captions beside references, time spans under the mel
    style.py          one publication style, byte-deterministic saving, shared axes helpers
"""
from workbench.figures.ablation import plot_ablation
from workbench.figures.attention import (
                                         plot_attention_mass,
                                         plot_attention_over_time,
                                         plot_attention_pattern,
                                         plot_audio_attention,
                                         plot_encoder_attention,
                                         plot_logit_lens,
)
from workbench.figures.attribution import plot_audio_attribution, plot_tag_attribution
from workbench.figures.clip import plot_mel, plot_waveform
from workbench.figures.interventions import plot_head_ranking, plot_patching, plot_word_alignment
from workbench.figures.style import publication_style, save_figure, use_style

__all__ = ["plot_ablation", "plot_attention_mass", "plot_attention_over_time", "plot_attention_pattern",
           "plot_audio_attention", "plot_audio_attribution", "plot_encoder_attention", "plot_head_ranking",
           "plot_logit_lens", "plot_mel", "plot_patching", "plot_tag_attribution", "plot_waveform",
           "plot_word_alignment", "publication_style", "save_figure", "use_style"]
