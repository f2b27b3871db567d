"""The attention weights of one sentence and heat maps of them, in the manner of the
paper's attention figures (Vaswani et al. 2017, Figures 3-5).

The sentence is translated greedily, then source and translation go through one
teacher-forced pass that returns every layer's weights::

    maps = attention_maps(model, vocab, "Ein Hund rennt.")
    maps.cross[-1]          # (H, T, S): last decoder layer, target -> source
    plot_attention(maps, "cross.png", kind="cross", layer=6, head=3)
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.dataset import source_tensor
from ..decode import DecodeConfig, Translator
from ..errors import TransformerMTError
from ..model import Transformer
from ..vocab import Vocabulary
from .figures import check_output, new_figure, save_figure

KINDS = ("encoder", "decoder", "cross")
TITLES = {
    "encoder": "encoder self-attention",
    "decoder": "decoder self-attention",
    "cross": "encoder-decoder attention",
}
PANEL_INCHES = 4.0


@dataclass
class AttentionMaps:
    """Attention of one sentence pair; the batch dimension is dropped.

    src_ids, src_pieces: the S source subwords, ending with the appended "</s>".
    tgt_input_pieces: the T pieces the decoder reads: "<s>" + translation.
    tgt_ids, tgt_pieces: the T subwords the decoder positions produce:
    translation + "</s>".
    encoder: per encoder layer, (H, S, S) self-attention weights.
    decoder: per decoder layer, (H, T, T) masked self-attention weights.
    cross: per decoder layer, (H, T, S) weights over the source.
    """

    text: str
    translation: str
    src_ids: list[int]
    tgt_ids: list[int]
    src_pieces: list[str]
    tgt_input_pieces: list[str]
    tgt_pieces: list[str]
    encoder: list[torch.Tensor]
    decoder: list[torch.Tensor]
    cross: list[torch.Tensor]

    def layers(self, kind: str) -> list[torch.Tensor]:
        return {"encoder": self.encoder, "decoder": self.decoder, "cross": self.cross}[
            kind
        ]

    def axes(self, kind: str) -> tuple[list[str], list[str]]:
        """(query pieces, key pieces) of one kind of attention."""
        if kind == "encoder":
            return self.src_pieces, self.src_pieces
        if kind == "decoder":
            return self.tgt_input_pieces, self.tgt_input_pieces
        return self.tgt_pieces, self.src_pieces


def attention_maps(model: Transformer, vocab: Vocabulary, text: str) -> AttentionMaps:
    """Translate ``text`` greedily, then return the weights of a teacher-forced pass
    over the source and that translation. The model is put in eval mode."""
    if not text.strip():
        raise TransformerMTError("the text to translate is empty")
    device = next(model.parameters()).device
    translator = Translator(model, vocab, DecodeConfig(strategy="greedy"), device)
    src_ids = translator.encode([text])[0]
    tokens = translator.hypotheses([text])[0][0].tokens
    return forced_attention(model, vocab, text, src_ids, tokens)


def forced_attention(
    model: Transformer, vocab: Vocabulary, text: str, src_ids: list, tokens: list
) -> AttentionMaps:
    """Weights of a teacher-forced pass over source ids ``src_ids`` (without EOS)
    and target ids ``tokens`` (without BOS/EOS), e.g. a translation already made."""
    device = next(model.parameters()).device
    src = source_tensor([src_ids]).to(device)  # (1, S)
    tgt_in = torch.tensor([[vocab.bos_id, *tokens]], device=device)  # (1, T)
    with torch.inference_mode():
        memory, src_attend, encoder = model.encode(src, need_weights=True)
        _, decoder = model.decode(tgt_in, memory, src_attend, need_weights=True)

    return AttentionMaps(
        text=text,
        translation=vocab.decode(tokens),
        src_ids=[*src_ids, vocab.eos_id],
        tgt_ids=[*tokens, vocab.eos_id],
        src_pieces=vocab.pieces([*src_ids, vocab.eos_id]),
        tgt_input_pieces=vocab.pieces([vocab.bos_id, *tokens]),
        tgt_pieces=vocab.pieces([*tokens, vocab.eos_id]),
        encoder=[w[0].cpu() for w in encoder],
        decoder=[w["self"][0].cpu() for w in decoder],
        cross=[w["cross"][0].cpu() for w in decoder],
    )


def _choose(maps: AttentionMaps, kind: str, layer: int | None, head: int | None):
    """Validate the selection; returns (kinds, {kind: 0-based layer}, heads)."""
    if kind not in (*KINDS, "all"):
        raise TransformerMTError(f"kind={kind!r}: use encoder, decoder, cross or all")
    kinds = KINDS if kind == "all" else (kind,)
    chosen = {}
    for k in kinds:
        count = len(maps.layers(k))
        if layer is not None and not 1 <= layer <= count:
            raise TransformerMTError(
                f"layer={layer}: the {TITLES[k]} has layers 1 to {count}"
            )
        chosen[k] = (layer or count) - 1
    H = maps.encoder[0].size(0)
    if head is not None and not 1 <= head <= H:
        raise TransformerMTError(f"head={head}: the model has heads 1 to {H}")
    heads = [head - 1] if head is not None else list(range(H))
    return kinds, chosen, heads


def _font_size(labels: list[str]) -> float:
    """Points for tick labels: smaller as more pieces share a panel's side."""
    return max(4.0, min(9.0, 220.0 / len(labels)))


def _draw_panel(ax, weights: torch.Tensor, rows: list[str], cols: list[str]) -> object:
    """One heat map: weights (rows, cols), a tick label per subword piece."""
    image = ax.imshow(
        weights.numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto"
    )
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=_font_size(cols))
    ax.set_yticks(range(len(rows)), rows, fontsize=_font_size(rows))
    return image


def plot_attention(
    maps: AttentionMaps,
    out: str | Path,
    kind: str = "all",
    layer: int | None = None,
    head: int | None = None,
) -> Path:
    """Draw heat maps to ``out`` (.png, .pdf or .svg): one row per kind of
    attention, one column per head (every head, or only ``head``). ``layer`` and
    ``head`` count from 1; the default layer is each stack's last.

    The figure is PANEL_INCHES square per panel at figures.DPI pixels per inch.
    """
    check_output(out)
    kinds, layers, heads = _choose(maps, kind, layer, head)
    figure = new_figure(PANEL_INCHES * len(heads), PANEL_INCHES * len(kinds))
    grid = figure.subplots(len(kinds), len(heads), squeeze=False)
    for r, k in enumerate(kinds):
        rows, cols = maps.axes(k)
        weights = maps.layers(k)[layers[k]]  # (H, rows, cols)
        for c, h in enumerate(heads):
            ax = grid[r][c]
            image = _draw_panel(ax, weights[h], rows, cols)
            ax.set_title(
                f"{TITLES[k]}\nlayer {layers[k] + 1}, head {h + 1}", fontsize=9
            )
    figure.colorbar(image, ax=grid.ravel().tolist(), shrink=0.6, label="weight")
    title = f"{maps.text}  ->  {maps.translation}"
    width = int(12 * PANEL_INCHES * len(heads))  # characters of 9 points
    figure.suptitle(textwrap.shorten(title, width, placeholder=" …"), fontsize=9)
    return save_figure(figure, out)
