"""The translation server: a LibreTranslate-compatible HTTP API with dynamic
batching, an endpoint for n-best lists and cross-attention, and a web page."""

from .app import create_app, run_server
from .config import ServeConfig
from .engine import TranslationEngine

__all__ = ["ServeConfig", "TranslationEngine", "create_app", "run_server"]
