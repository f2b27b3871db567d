"""Translation: search strategies (greedy, beam, sampling) and the Translator API."""

from .search import DecodeConfig, Hypothesis, beam_search, greedy_search, sample_search
from .translator import Translator

__all__ = [
    "DecodeConfig",
    "Hypothesis",
    "Translator",
    "beam_search",
    "greedy_search",
    "sample_search",
]
