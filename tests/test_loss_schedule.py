"""Label-smoothed loss and learning-rate schedule against hand-computed values."""

import math

import pytest
import torch

from transformer_mt.errors import TransformerMTError
from transformer_mt.train.config import TrainConfig, parse_duration
from transformer_mt.train.loss import label_smoothed_loss
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
