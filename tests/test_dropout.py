"""The CPU dropout of transformer_mt.model.dropout against its definition:
every output element is 0 or x / P(keep), the drop rate is p, every 16-bit lane
of the random words is used uniformly, and the gradient is the same mask."""

import math

import pytest
import torch
import torch.nn.functional as F

from transformer_mt.model.dropout import Dropout, dropout, keep_mask


def test_identity_when_not_training_or_rate_zero():
    x = torch.randn(5, 7)
    assert dropout(x, 0.3, training=False) is x
    assert dropout(x, 0.0) is x
    module = Dropout(0.3).eval()
    assert module(x) is x
    with pytest.raises(ValueError):
        Dropout(1.5)


@pytest.mark.parametrize("p", [0.1, 0.2, 0.3, 0.5])
def test_drop_rate_and_lanes_are_uniform(p):
    torch.manual_seed(1)
    n = 4 * 250_000
    keep, scale = keep_mask(torch.Size([n]), p)
    dropped = round(p * 65536) / 65536
    assert abs(dropped - p) <= 0.5 / 65536
    assert scale == pytest.approx(1 / (1 - dropped), rel=1e-12)
    # each of the four 16-bit lanes of a word: binomial, 5 standard deviations
    per_lane = (~keep).view(-1, 4).double().mean(0)
    sd = math.sqrt(dropped * (1 - dropped) / (n // 4))
    assert ((per_lane - dropped).abs() < 5 * sd).all(), per_lane
    # neighbours in one word are independent: P(both dropped) = p^2
    pairs = (~keep).view(-1, 2)
    both = (pairs[:, 0] & pairs[:, 1]).double().mean().item()
    sd_pair = math.sqrt(dropped**2 * (1 - dropped**2) / (n // 2))
    assert abs(both - dropped**2) < 5 * sd_pair


def test_output_is_zero_or_scaled_input_and_gradient_uses_the_same_mask():
    torch.manual_seed(2)
    x = torch.randn(64, 33, 16, dtype=torch.float64, requires_grad=True)
    out = dropout(x, 0.25)
    scale = 65536 / (65536 - round(0.25 * 65536))
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept] * scale, rtol=0, atol=0)
    assert 0.2 < 1 - kept.double().mean().item() < 0.3
    weight = torch.randn_like(x)
    (out * weight).sum().backward()
    torch.testing.assert_close(x.grad, weight * kept * scale, rtol=0, atol=0)


def test_masks_follow_the_seed_and_bfloat16_stays_bfloat16():
    x = torch.randn(100, 64).bfloat16()
    torch.manual_seed(3)
    a = dropout(x, 0.1)
    torch.manual_seed(3)
    b = dropout(x, 0.1)
    assert a.dtype == torch.bfloat16
    assert torch.equal(a, b)
    assert not torch.equal(a, dropout(x, 0.1))


def test_rate_one_and_empty_input_match_torch():
    x = torch.randn(4, 3)
    assert torch.equal(dropout(x, 1.0), F.dropout(x, 1.0, True))
    empty = torch.randn(0, 3)
    assert dropout(empty, 0.5) is empty
