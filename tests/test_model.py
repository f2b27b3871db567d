"""Model equivalences: padding, incremental decoding, causality, shapes, presets."""

import math

import pytest
import torch

from transformer_mt.errors import TransformerMTError
from transformer_mt.model import ModelConfig, Transformer, preset
from transformer_mt.model.embeddings import sinusoid_table

from .conftest import tiny_model

VARIANTS = [
    dict(norm="post", positions="sinusoidal"),
    dict(norm="pre", positions="sinusoidal"),
    dict(norm="post", positions="learned"),
]


def random_tokens(B, T, low=4, high=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (B, T), generator=g)


@pytest.mark.parametrize("variant", VARIANTS)
def test_padded_batch_equals_each_sentence_alone(variant):
    model = tiny_model(**variant)
    lengths = [5, 9, 3]
    sentences = [random_tokens(1, n, seed=n)[0] for n in lengths]
    tgt_in = random_tokens(3, 4, seed=7)
    src = torch.zeros(3, max(lengths), dtype=torch.long)  # pad id 0
    for i, s in enumerate(sentences):
        src[i, : len(s)] = s
    with torch.no_grad():
        batched = model(src, tgt_in)
        for i, s in enumerate(sentences):
            alone = model(s[None], tgt_in[i : i + 1])
            torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_incremental_decoding_equals_full_recomputation(variant):
    model = tiny_model(**variant)
    src = random_tokens(2, 6)
    src[1, 4:] = 0  # padding in the second sentence
    tgt = random_tokens(2, 7, seed=3)
    with torch.no_grad():
        full = model(src, tgt)  # (B, T, V)
        memory, src_attend, _ = model.encode(src)
        state = model.start_decoding(memory, src_attend)
        steps = [
            model.decode_step(tgt[:, t : t + 1], state)[0] for t in range(tgt.size(1))
        ]
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_cache_reorder_follows_hypotheses():
    model = tiny_model()
    src, tgt = random_tokens(3, 5), random_tokens(3, 4, seed=2)
    with torch.no_grad():
        memory, src_attend, _ = model.encode(src)
        state = model.start_decoding(memory, src_attend)
        for t in range(3):
            model.decode_step(tgt[:, t : t + 1], state)
        order = torch.tensor([2, 0, 0])
        state.reorder(order)
        step = model.decode_step(tgt[order, 3:4], state)[0]
        full = model(src[order], tgt[order])[:, 3]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)


def test_future_target_tokens_cannot_change_earlier_outputs():
    model = tiny_model()
    src, tgt = random_tokens(1, 6), random_tokens(1, 8, seed=5)
    changed = tgt.clone()
    changed[0, 5:] = random_tokens(1, 3, seed=9)[0]
    with torch.no_grad():
        a, b = model(src, tgt), model(src, changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_sinusoid_matches_the_paper_formula():
    table = sinusoid_table(50, 16)
    for pos, i in [(0, 0), (7, 2), (49, 7)]:
        angle = pos / 10000 ** (2 * i / 16)
        assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_one_matrix_shared_by_embeddings_and_output_projection():
    model = tiny_model()
    hidden = torch.randn(2, 3, 32)
    expected = hidden @ model.embedding.weight.t()
    torch.testing.assert_close(model.project(hidden), expected)
    names = [n for n, _ in model.named_parameters() if "embedding" in n]
    assert names == ["embedding.weight"]
    tokens = torch.tensor([[5, 6]])
    torch.testing.assert_close(
        model.embedding(tokens), model.embedding.weight[tokens] * math.sqrt(32)
    )


def test_explicit_attention_weights_match_fused_path():
    model = tiny_model()
    src, tgt = random_tokens(2, 6), random_tokens(2, 4, seed=1)
    src[0, 4:] = 0
    with torch.no_grad():
        memory, src_attend, enc_weights = model.encode(src, need_weights=True)
        memory_fused, _, _ = model.encode(src)
        hidden, dec_weights = model.decode(tgt, memory, src_attend, need_weights=True)
        hidden_fused, _ = model.decode(tgt, memory, src_attend)
    torch.testing.assert_close(memory, memory_fused, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hidden, hidden_fused, atol=1e-5, rtol=1e-5)
    cross = dec_weights[0]["cross"]  # (B, H, T, S)
    torch.testing.assert_close(cross.sum(-1), torch.ones(2, 4, 4))
    assert torch.all(cross[0, :, :, 4:] == 0)  # never on padding
    assert enc_weights[0].shape == (2, 4, 6, 6)


@pytest.mark.parametrize("name,expected_millions", [("base", 65), ("big", 213)])
def test_paper_presets_have_the_papers_parameter_counts(name, expected_millions):
    # Table 3 reports 65M (base) and 213M (big) with a shared 37k BPE vocabulary.
    config = preset(name, vocab_size=37000)
    model = Transformer(config)
    assert model.num_parameters() / 1e6 == pytest.approx(expected_millions, rel=0.03)


def test_base_preset_is_the_papers_configuration():
    c = preset("base")
    assert (c.d_model, c.d_ff, c.heads, c.encoder_layers, c.dropout) == (
        512,
        2048,
        8,
        6,
        0.1,
    )
    b = preset("big")
    assert (b.d_model, b.d_ff, b.heads, b.encoder_layers, b.dropout) == (
        1024,
        4096,
        16,
        6,
        0.3,
    )


def test_bad_model_config_lists_every_problem():
    with pytest.raises(
        TransformerMTError, match="d_model=30 must be divisible by heads=4.*norm"
    ):
        ModelConfig(d_model=30, heads=4, norm="middle")
    with pytest.raises(TransformerMTError, match="unknown model config key"):
        ModelConfig.from_dict({"d_modle": 3})
    with pytest.raises(TransformerMTError, match="unknown preset 'huge'"):
        preset("huge")


def test_sequence_longer_than_max_positions_is_refused():
    model = tiny_model(max_positions=8)
    with pytest.raises(TransformerMTError, match="exceeds max_positions=8"):
        model(random_tokens(1, 9), random_tokens(1, 3))


def weighted_sum(tensors):
    """A scalar to which each tensor contributes with its own weight."""
    return sum(t.sum() * (i + 1) for i, t in enumerate(tensors))


def test_stacked_projections_equal_the_separate_ones_with_gradients():
    model = tiny_model().double()
    attention = model.decoder_layers[0].cross_attention
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    linears = (attention.q_proj, attention.k_proj, attention.v_proj)
    for first, project in ((0, attention.project_qkv), (1, attention.project_kv)):
        stacked = project(x)
        weighted_sum(stacked).backward()
        fused_grads = [m.weight.grad.clone() for m in linears[first:]]
        model.zero_grad()
        separate = [attention.split_heads(m(x)) for m in linears[first:]]
        weighted_sum(separate).backward()
        for a, b in zip(stacked, separate):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        for m, g in zip(linears[first:], fused_grads):
            torch.testing.assert_close(m.weight.grad, g, rtol=1e-12, atol=1e-12)
        model.zero_grad()


def test_cached_inference_projection_follows_in_place_changes():
    model = tiny_model()
    attention = model.decoder_layers[0].self_attention
    x = torch.randn(2, 5, 32)
    separate = attention.q_proj(x)
    with torch.inference_mode():
        cached = attention.project_qkv(x)[0]
        with torch.no_grad():
            attention.q_proj.weight.mul_(2.0)  # an in-place change must be seen
        changed = attention.project_qkv(x)[0]
    torch.testing.assert_close(cached, attention.split_heads(separate))
    expected = attention.split_heads(2 * separate - attention.q_proj.bias)
    torch.testing.assert_close(changed, expected, atol=1e-5, rtol=1e-5)


def test_evaluation_after_a_fused_adam_step_uses_the_new_weights():
    # fused Adam updates weights without bumping their version counters: the
    # stacked q/k/v copy built in one evaluation must not outlive the next step
    model = tiny_model()
    src, tgt = random_tokens(2, 6, seed=1), random_tokens(2, 5, seed=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
    model.eval()
    with torch.inference_mode():
        model(src, tgt)  # builds the stacked copies
    model.train()
    model(src, tgt).sum().backward()
    optimizer.step()
    model.eval()
    with torch.inference_mode():
        after = model(src, tgt)
    fresh = tiny_model()
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    with torch.inference_mode():
        expected = fresh(src, tgt)
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)


def test_bfloat16_attention_on_cpu_agrees_with_float32():
    from transformer_mt.model.attention import fused_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 5, 8, generator=g) for _ in range(3))
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    mask[1, ..., 3:] = False
    exact = fused_attention(q, k, v, mask, 0.0, False)
    fast = fused_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, 0.0, False)
    assert fast.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), exact, atol=3e-2, rtol=3e-2)


def test_bfloat16_autocast_training_step_agrees_with_float32():
    model = tiny_model(seed=1)
    src, tgt = random_tokens(3, 6), random_tokens(3, 5, seed=2)
    exact = model(src, tgt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = model(src, tgt)
    assert fast.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa: logits agree to about 1e-2 relative
    torch.testing.assert_close(fast.float(), exact, atol=0.1, rtol=0.05)
    assert (fast.float().argmax(-1) == exact.argmax(-1)).float().mean() > 0.9


def test_source_shared_by_its_beams_equals_one_copy_per_row():
    model = tiny_model()
    src, tgt = random_tokens(3, 5), random_tokens(9, 4, seed=2)
    src[1, 3:] = 0
    expand = torch.arange(3).repeat_interleave(3)  # 3 rows per source, like beams
    with torch.no_grad():
        memory, src_attend, _ = model.encode(src)
        shared = model.start_decoding(memory, src_attend)
        shared.reorder(expand)
        copied = model.start_decoding(memory[expand], src_attend[expand])
        assert shared.cross_kv[0][0].size(0) == 3  # one per source, not per row
        for t in range(3):
            a = model.decode_step(tgt[:, t : t + 1], shared)[0]
            b = model.decode_step(tgt[:, t : t + 1], copied)[0]
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        swap = torch.tensor([2, 0, 1, 3, 3, 4, 8, 7, 6])  # within sources
        shared.reorder(swap)
        copied.reorder(swap)
        assert shared.cross_kv[0][0].size(0) == 3
        drop = torch.tensor([0, 1, 2, 6, 7, 8])  # the second source is done
        shared.reorder(drop)
        copied.reorder(drop)
        assert shared.cross_kv[0][0].size(0) == 2
        a = model.decode_step(tgt[drop, 3:4], shared)[0]
        b = model.decode_step(tgt[drop, 3:4], copied)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
