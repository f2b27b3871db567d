"""Seeing inside a model: attention maps, training curves and model facts.

Nothing in ``model``, ``train`` or ``decode`` imports this package; matplotlib is
imported only when a figure is drawn.
"""

from .attention import AttentionMaps, attention_maps, plot_attention
from .info import ModelFacts, model_facts
from .plots import plot_metrics, read_metrics

__all__ = [
    "AttentionMaps",
    "ModelFacts",
    "attention_maps",
    "model_facts",
    "plot_attention",
    "plot_metrics",
    "read_metrics",
]
