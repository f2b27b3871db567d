"""Export to a CTranslate2 model directory through CTranslate2's own Transformer
spec, and translate with ``ctranslate2.Translator``.

Layout facts the spec expects (and our model differs in):
- self-attention takes one fused (3D, D) query/key/value matrix, cross-attention a
  (D, D) query and a fused (2D, D) key/value matrix;
- CTranslate2's built-in sinusoids put all sines before all cosines, ours
  interleave them: the table is stored explicitly;
- the output projection is our shared embedding matrix (no bias);
- the source gets EOS appended (``add_source_eos``), decoding starts from BOS.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint
from ..errors import TransformerMTError
from ..model import Transformer
from ..model.embeddings import sinusoid_table
from ..vocab import Vocabulary
from . import require

log = logging.getLogger(__name__)

QUANTIZATIONS = ("float32", "int8")


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().float().numpy().copy()


def _set_linear(spec, *linears: torch.nn.Linear) -> None:
    """One spec linear from one or more of ours stacked along the output."""
    spec.weight = _array(torch.cat([m.weight for m in linears]))
    spec.bias = _array(torch.cat([m.bias for m in linears]))


def _set_norm(spec, norm: torch.nn.LayerNorm) -> None:
    spec.gamma = _array(norm.weight)
    spec.beta = _array(norm.bias)


def _set_feed_forward(spec, layer) -> None:
    _set_linear(spec.linear_0, layer.feed_forward.linear1)
    _set_linear(spec.linear_1, layer.feed_forward.linear2)
    _set_norm(spec.layer_norm, layer.feed_forward_residual.norm)


def _set_encoder_layer(spec, layer) -> None:
    attention = layer.self_attention
    _set_linear(spec.self_attention.linear[0], *_qkv(attention))
    _set_linear(spec.self_attention.linear[1], attention.out_proj)
    _set_norm(spec.self_attention.layer_norm, layer.attention_residual.norm)
    _set_feed_forward(spec.ffn, layer)


def _set_decoder_layer(spec, layer) -> None:
    own, cross = layer.self_attention, layer.cross_attention
    _set_linear(spec.self_attention.linear[0], *_qkv(own))
    _set_linear(spec.self_attention.linear[1], own.out_proj)
    _set_norm(spec.self_attention.layer_norm, layer.self_residual.norm)
    _set_linear(spec.attention.linear[0], cross.q_proj)
    _set_linear(spec.attention.linear[1], cross.k_proj, cross.v_proj)
    _set_linear(spec.attention.linear[2], cross.out_proj)
    _set_norm(spec.attention.layer_norm, layer.cross_residual.norm)
    _set_feed_forward(spec.ffn, layer)


def _qkv(attention) -> tuple:
    return attention.q_proj, attention.k_proj, attention.v_proj


def _positions(model: Transformer) -> np.ndarray:
    """(P, D) encodings in our layout, sinusoidal or learned."""
    config = model.config
    if config.positions == "learned":
        return _array(model.positions.weight)
    return _array(sinusoid_table(config.max_positions, config.d_model))


def _set_stack(spec, model: Transformer, layers, norm, set_layer) -> None:
    spec.scale_embeddings = True  # our embeddings are multiplied by sqrt(D)
    spec.position_encodings.encodings = _positions(model)
    for layer_spec, layer in zip(spec.layer, layers):
        set_layer(layer_spec, layer)
    if model.config.norm == "pre":
        _set_norm(spec.layer_norm, norm)


def build_spec(model: Transformer, vocab: Vocabulary):
    """A validated ``ctranslate2.specs.TransformerSpec`` holding our weights."""
    ctranslate2 = require("ctranslate2")
    config = model.config
    spec = ctranslate2.specs.TransformerSpec.from_config(
        (config.encoder_layers, config.decoder_layers),
        config.heads,
        pre_norm=config.norm == "pre",
        activation=ctranslate2.specs.Activation.RELU,
    )
    embedding = _array(model.embedding.weight)  # (V, D), shared three ways
    spec.encoder.embeddings[0].weight = embedding
    spec.decoder.embeddings.weight = embedding
    spec.decoder.projection.weight = embedding
    _set_stack(
        spec.encoder,
        model,
        model.encoder_layers,
        model.encoder_norm,
        _set_encoder_layer,
    )
    _set_stack(
        spec.decoder,
        model,
        model.decoder_layers,
        model.decoder_norm,
        _set_decoder_layer,
    )
    _set_vocabulary(spec, vocab)
    spec.validate()
    return spec


def _set_vocabulary(spec, vocab: Vocabulary) -> None:
    pieces = vocab.pieces(range(len(vocab)))
    spec.register_source_vocabulary(pieces)
    spec.register_target_vocabulary(pieces)
    spec.config.unk_token = pieces[vocab.unk_id]
    spec.config.bos_token = pieces[vocab.bos_id]
    spec.config.eos_token = pieces[vocab.eos_id]
    spec.config.decoder_start_token = pieces[vocab.bos_id]
    spec.config.add_source_eos = True  # our sources end with EOS


def export(checkpoint_path: str | Path, out: str | Path, quantization: str) -> Path:
    """Write a CTranslate2 model directory (model.bin, config.json, vocabulary,
    and our spm.model beside them) for the checkpoint at ``checkpoint_path``."""
    if quantization not in QUANTIZATIONS:
        raise TransformerMTError(
            f"quantization={quantization!r}: choose one of {', '.join(QUANTIZATIONS)}"
        )
    ckpt = checkpoint.load(checkpoint_path)
    spec = build_spec(ckpt.build_model(), ckpt.vocab)
    spec.optimize(quantization=quantization)
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    spec.save(str(out))
    ckpt.vocab.save(out / "spm.model")
    log.info("wrote a %s CTranslate2 model to %s", quantization, out)
    return out


class CTranslate2Translator:
    """Translate with an exported CTranslate2 directory, with our decoding options.

    Inputs are sorted by length into batches of ``config.batch_tokens`` like the
    PyTorch Translator; each batch's length limit is that of its longest source.
    CTranslate2 normalises beam scores by length ** alpha, not by the GNMT penalty
    we use, so beam search may rank a few hypotheses differently.
    """

    def __init__(self, directory, config, threads: int = 0, compute_type="default"):
        ctranslate2 = require("ctranslate2")
        directory = Path(directory)
        if not (directory / "model.bin").is_file():
            raise TransformerMTError(
                f"{directory}: not a CTranslate2 model directory (no model.bin); "
                "create one with: transformer-mt export --format ctranslate2"
            )
        if config.strategy == "sample" or config.nbest != 1:
            raise TransformerMTError(
                "the ctranslate2 backend supports greedy and beam search with nbest 1"
            )
        self.config = config
        self.vocab = Vocabulary.load(directory / "spm.model")
        self._ids = {
            p: i for i, p in enumerate(self.vocab.pieces(range(len(self.vocab))))
        }
        self._translator = ctranslate2.Translator(
            str(directory),
            device="cpu",
            compute_type=compute_type,
            inter_threads=1,
            intra_threads=threads,
        )

    def translate(self, texts: list[str]) -> list[str]:
        from ..decode.translator import check_texts

        check_texts(texts)
        pieces = [self.vocab.pieces(ids) for ids in self.vocab.encode_batch(texts)]
        order = sorted(
            (i for i, s in enumerate(pieces) if s), key=lambda i: -len(pieces[i])
        )
        width = self.config.beam_size if self.config.strategy == "beam" else 1
        results = [""] * len(texts)
        start = 0
        while start < len(order):
            longest = len(pieces[order[start]]) + 1
            size = max(1, self.config.batch_tokens // (longest * width))
            batch = order[start : start + size]
            for i, text in zip(
                batch, self._translate_batch([pieces[i] for i in batch])
            ):
                results[i] = text
            start += size
        return results

    def _translate_batch(self, sources: list[list[str]]) -> list[str]:
        config = self.config
        limit = max(map(self._limit, sources))
        outputs = self._translator.translate_batch(
            sources,
            beam_size=config.beam_size if config.strategy == "beam" else 1,
            length_penalty=config.length_penalty,
            max_decoding_length=max(limit - 1, 1),
            min_decoding_length=0,
            max_batch_size=len(sources),
        )
        # Our limit is per sentence, CTranslate2's per call: cut each output at
        # its own sentence's limit, as the PyTorch search stops there.
        return [
            self.vocab.decode([self._ids[p] for p in out.hypotheses[0]][: own - 1])
            for out, own in zip(outputs, map(self._limit, sources))
        ]

    def _limit(self, source: list[str]) -> int:
        """Output tokens allowed for ``source``, EOS included."""
        return int(self.config.max_len_a * len(source)) + self.config.max_len_b
