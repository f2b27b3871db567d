"""Label-smoothed loss and learning-rate schedule against hand-computed values."""

import math

import pytest
import torch

from transformer_mt.errors import TransformerMTError
from transformer_mt.train.config import TrainConfig, parse_duration
from transformer_mt.train.loss import label_smoothed_loss, projected_smoothed_loss
from transformer_mt.train.schedule import inverse_sqrt_lr


def test_label_smoothed_loss_equals_hand_computed_value():
    # probabilities 0.1, 0.2, 0.3, 0.4 over V = 4; gold token 2; eps = 0.1 puts
    # 0.9 on the gold token and 0.1 / 3 on each of the other three.
    logits = torch.log(torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]]]))
    target = torch.tensor([[2, 0]])  # second position is padding (id 0)
    loss, nll = label_smoothed_loss(logits, target, smoothing=0.1, pad_id=0)
    expected = -(
        0.9 * math.log(0.3) + 0.1 / 3 * (math.log(0.1) + math.log(0.2) + math.log(0.4))
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert nll.item() == pytest.approx(-math.log(0.3), rel=1e-6)


def test_no_smoothing_is_plain_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 5, 11), torch.randint(1, 11, (2, 5))
    loss, nll = label_smoothed_loss(logits, target, 0.0, pad_id=0)
    reference = torch.nn.functional.cross_entropy(
        logits.double().view(-1, 11), target.view(-1), reduction="sum"
    )
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert nll.item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize(
    "step,expected",
    [
        (1, 512**-0.5 * 4000**-1.5),
        (2000, 512**-0.5 * 2000 * 4000**-1.5),
        (4000, 6.987712429686843e-4),  # the peak: 512^-0.5 * 4000^-0.5
        (16000, 3.4938562148434217e-4),  # half the peak at four times warm-up
    ],
)
def test_schedule_equals_the_paper_formula(step, expected):
    assert inverse_sqrt_lr(step, 512, 4000) == pytest.approx(expected, rel=1e-9)
    assert inverse_sqrt_lr(step, 512, 4000, scale=2.0) == pytest.approx(2 * expected)


def test_durations_and_bad_training_options():
    assert parse_duration("90") == 90 and parse_duration("10m") == 600
    assert parse_duration("1.5h") == 5400 and parse_duration("") == 0
    with pytest.raises(TransformerMTError, match="max_time='ten minutes'"):
        TrainConfig(max_time="ten minutes")
    with pytest.raises(TransformerMTError, match="max_tokens=0 must be >= 1"):
        TrainConfig(max_tokens=0)


def _float64_loss(logits, target, smoothing):
    """The smoothed loss written out in float64: (loss sum, NLL sum)."""
    V = logits.size(-1)
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    keep = target != 0
    gold = log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    others = log_probs.sum(-1) - gold
    loss = -(1 - smoothing) * gold - smoothing / (V - 1) * others
    return loss[keep].sum(), -gold[keep].sum()


def _projection_case(dtype=torch.float64):
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 16, dtype=dtype, requires_grad=True)
    weight = torch.randn(50, 16, dtype=dtype, requires_grad=True)
    target = torch.randint(1, 50, (3, 7))
    target[0, 5:] = 0  # padding
    target[2, 2:] = 0
    return hidden, weight, target


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("chunk_rows", [1, 4, 1024])
def test_projected_loss_equals_plain_loss_and_its_gradients(smoothing, chunk_rows):
    hidden, weight, target = _projection_case()
    loss, nll = _float64_loss(hidden @ weight.t(), target, smoothing)
    loss.backward()
    expected = loss.item(), nll.item(), hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    keep = target != 0
    loss, nll = projected_smoothed_loss(
        hidden[keep], weight, target[keep], smoothing, chunk_rows
    )
    (2.5 * loss).backward()  # the upstream gradient scales both results
    assert loss.item() == pytest.approx(expected[0], rel=1e-12)
    assert nll.item() == pytest.approx(expected[1], rel=1e-12)
    torch.testing.assert_close(hidden.grad, 2.5 * expected[2], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(weight.grad, 2.5 * expected[3], rtol=1e-10, atol=1e-12)
    assert not hidden.grad[~keep].any()  # padding rows get no gradient


def test_projected_loss_without_gradients_gives_the_same_sums():
    hidden, weight, target = _projection_case()
    keep = target != 0
    with torch.no_grad():
        reference = _float64_loss(hidden @ weight.t(), target, 0.1)
    with torch.inference_mode():
        loss, nll = projected_smoothed_loss(hidden[keep], weight, target[keep], 0.1, 4)
    assert loss.item() == pytest.approx(reference[0].item(), rel=1e-12)
    assert nll.item() == pytest.approx(reference[1].item(), rel=1e-12)


def test_projected_loss_under_bfloat16_autocast_follows_the_plain_path():
    hidden, weight, target = _projection_case(torch.float32)
    keep = target != 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain, _ = label_smoothed_loss(hidden @ weight.t(), target, 0.1, 0)
        fused, _ = projected_smoothed_loss(hidden[keep], weight, target[keep], 0.1)
    assert fused.dtype == torch.float32
    assert fused.item() == pytest.approx(plain.item(), rel=1e-6)
    plain.backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    fused.backward()
    assert hidden.grad.dtype == weight.grad.dtype == torch.float32
    # bf16 products on both sides; the fused one sums the weight gradient in fp32
    torch.testing.assert_close(hidden.grad, grads[0], rtol=0.02, atol=1e-2)
    torch.testing.assert_close(weight.grad, grads[1], rtol=0.02, atol=1e-2)


def test_objective_equals_model_logits_with_the_plain_loss():
    from transformer_mt.model import Transformer, preset
    from transformer_mt.train.loss import SmoothedLossObjective

    torch.manual_seed(0)
    model = Transformer(preset("tiny", vocab_size=40, dropout=0.0)).double()
    src = torch.randint(4, 40, (3, 6))
    src[1, 4:] = 0
    tgt = torch.randint(4, 40, (3, 5))
    tgt[2, 3:] = 0
    loss, nll = SmoothedLossObjective(model, 0.1)(src, tgt, tgt)
    plain, plain_nll = _float64_loss(model(src, tgt), tgt, 0.1)
    assert loss.item() == pytest.approx(plain.item(), rel=1e-12)
    assert nll.item() == pytest.approx(plain_nll.item(), rel=1e-12)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = torch.autograd.grad(plain, list(model.parameters()))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_compiled_objective_equals_eager_across_batch_shapes():
    """``compile_features`` compiles the encoder-decoder pass; loss and gradients
    agree with eager on batches of different shapes, in float64."""
    from transformer_mt.model import Transformer, preset
    from transformer_mt.train.loss import SmoothedLossObjective

    torch.manual_seed(0)
    model = Transformer(preset("tiny", vocab_size=40, dropout=0.0)).double()
    eager = SmoothedLossObjective(model, 0.1)
    compiled = SmoothedLossObjective(model, 0.1, compile_features=True)
    for batch, src_len, tgt_len in ((3, 6, 5), (5, 9, 7), (2, 4, 8)):
        src = torch.randint(4, 40, (batch, src_len))
        src[-1, src_len // 2 :] = 0
        tgt = torch.randint(4, 40, (batch, tgt_len))
        tgt[0, tgt_len - 2 :] = 0
        got = compiled(src, tgt, tgt)
        want = eager(src, tgt, tgt)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        got_grads = torch.autograd.grad(got[0], list(model.parameters()))
        want_grads = torch.autograd.grad(want[0], list(model.parameters()))
        for g, w in zip(got_grads, want_grads):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)
