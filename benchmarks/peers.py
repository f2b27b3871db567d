"""Peer implementations of our architecture, shared by the benchmarks."""

from __future__ import annotations


def marian_config(config, dropout: float = 0.0):
    """A Hugging Face MarianConfig of the same architecture as our ``ModelConfig``:
    post-norm, ReLU, scaled and shared embeddings, tied output layer; dropout only
    on sub-layer outputs and embeddings (the paper's sites, as ours)."""
    from transformers import MarianConfig

    return MarianConfig(
        vocab_size=config.vocab_size,
        d_model=config.d_model,
        encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.heads,
        decoder_attention_heads=config.heads,
        encoder_ffn_dim=config.d_ff,
        decoder_ffn_dim=config.d_ff,
        activation_function="relu",
        dropout=dropout,
        attention_dropout=0.0,
        activation_dropout=0.0,
        max_position_embeddings=config.max_positions,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        pad_token_id=config.pad_id,
        eos_token_id=3,
        decoder_start_token_id=2,
        forced_eos_token_id=None,
    )
