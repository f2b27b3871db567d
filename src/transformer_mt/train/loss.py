"""Label-smoothed cross-entropy (section 5.4) that ignores padding.

Two implementations of one loss:

- ``label_smoothed_loss`` takes logits (B, T, V): the plain, readable definition,
  used as the reference in the tests.
- ``SmoothedLossObjective`` is what training and validation run: the output
  projection and the loss in one step over the non-padding positions only, in
  chunks of rows, with the gradient of the logits formed in place. It never holds
  the (B, T, V) logits, their log-softmax or the scatter/add tensors autograd
  would build for them. Those passes over memory took about a quarter of a
  `small` CPU training step in a float32, 1-thread profile with our reference
  loss; against PyTorch's ``F.cross_entropy`` on full logits (2 threads, jemalloc,
  benchmarks/train_throughput.py, row ``ours_logits``) no speed difference was
  measurable. What it still saves is the memory of the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def label_smoothed_loss(
    logits: torch.Tensor, target: torch.Tensor, smoothing: float, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss over non-pad positions.

    The smoothed target puts 1 - smoothing on the gold token and spreads
    ``smoothing`` evenly over the other V - 1 tokens.

    logits (B, T, V), target (B, T) -> (smoothed loss sum, NLL sum), both scalars
    in float32 whatever the logits' dtype.
    """
    V = logits.size(-1)
    log_probs = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    keep = target != pad_id  # (B, T)
    nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, T)
    every = -log_probs.sum(-1)  # (B, T): sum over all V tokens
    other = smoothing / (V - 1)
    loss = (1.0 - smoothing - other) * nll + other * every  # (B, T)
    return loss[keep].sum(), nll[keep].sum()


class _ProjectedSmoothedLoss(torch.autograd.Function):
    """Output projection + label-smoothed loss of N rows, summed.

    With p = softmax(z) and o = smoothing / (V - 1), the loss of one row is
    (1 - smoothing - o) (lse - z_gold) + o (V lse - sum(z)), and its gradient
    with respect to the logits z is p - o - (1 - smoothing - o) onehot(gold):
    both come from one chunk of logits at a time, so the gradients of hidden
    and weight are formed here and only scaled in ``backward``.
    """

    @staticmethod
    def forward(ctx, hidden, weight, target, smoothing, chunk_rows, compute_dtype):
        N, D = hidden.shape
        V = weight.size(0)
        other = smoothing / (V - 1)
        gold = 1.0 - smoothing - other
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        # softmax and sums in float32 at least (float64 stays float64)
        exact = torch.promote_types(compute_dtype, torch.float32)
        w = weight.to(compute_dtype)  # (V, D)
        loss = torch.zeros((), dtype=exact, device=hidden.device)
        nll = torch.zeros((), dtype=exact, device=hidden.device)
        grad_h = grad_w = None
        if need_grad:
            grad_h = torch.empty(N, D, dtype=exact, device=hidden.device)
            grad_w = torch.zeros(V, D, dtype=exact, device=hidden.device)
        for start in range(0, N, chunk_rows):
            h = hidden[start : start + chunk_rows].to(compute_dtype)  # (n, D)
            y = target[start : start + chunk_rows, None]  # (n, 1)
            z = (h @ w.t()).to(exact)  # (n, V)
            z_gold, z_sum = z.gather(-1, y), z.sum(-1, keepdim=True)  # (n, 1) each
            # log-sum-exp by hand, leaving exp(z - max) in z: two passes fewer
            # than torch.logsumexp followed by a softmax
            z_max = z.amax(-1, keepdim=True)  # (n, 1)
            p = z.sub_(z_max).exp_()  # unnormalised probabilities, in place
            total = p.sum(-1, keepdim=True)  # (n, 1)
            lse = z_max + total.log()  # (n, 1)
            gold_nll = lse - z_gold  # (n, 1)
            nll += gold_nll.sum()
            loss += gold * gold_nll.sum() + other * (V * lse - z_sum).sum()
            if not need_grad:
                continue
            g = p.mul_(total.reciprocal_()).sub_(other)  # softmax - o: (n, V)
            g.scatter_add_(-1, y, torch.full_like(gold_nll, -gold))
            g = g.to(compute_dtype)
            grad_h[start : start + chunk_rows] = g @ w  # (n, D)
            if compute_dtype == exact:
                grad_w.addmm_(g.t(), h)  # (V, D)
            else:
                grad_w += (g.t() @ h).to(exact)  # (V, D), summed in float32
        ctx.mark_non_differentiable(nll)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = hidden.dtype, weight.dtype
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss, grad_nll):
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        return (
            (grad_h * grad_loss).to(h_dtype),
            (grad_w * grad_loss).to(w_dtype),
            None,
            None,
            None,
            None,
        )


def projected_smoothed_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    smoothing: float,
    chunk_rows: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of the rows ``hidden`` (N, D) projected by ``weight`` (V, D) against
    ``target`` (N,): (smoothed loss sum, NLL sum) as float32 (or float64)
    scalars, equal to
    ``label_smoothed_loss(hidden @ weight.T, target, ...)``.

    Under autocast the matrix products run in the autocast dtype (as a plain
    projection would) and the softmax in float32.
    """
    device = hidden.device.type
    compute_dtype = hidden.dtype
    if torch.is_autocast_enabled(device):
        compute_dtype = torch.get_autocast_dtype(device)
    with torch.autocast(device, enabled=False):
        return _ProjectedSmoothedLoss.apply(
            hidden, weight, target, smoothing, chunk_rows, compute_dtype
        )


class SmoothedLossObjective(nn.Module):
    """The training objective as a module: the model's decoder output, projected
    and scored only where the target is not padding.

    Wrapping model and loss in one module lets DistributedDataParallel see the
    whole step; ``compile_features`` compiles the model's part of it.

    forward: src (B, S), tgt_in (B, T), tgt_out (B, T) -> (smoothed loss sum,
    NLL sum), float32 scalars.
    """

    def __init__(
        self, model: nn.Module, smoothing: float, compile_features: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.smoothing = smoothing
        # torch.compile gets the encoder-decoder pass only: the row selection
        # below has a data-dependent shape, which would split the graph, and
        # each new batch shape would then compile again.
        self._features = model.features
        if compile_features:
            self._features = torch.compile(model.features, dynamic=True)

    def forward(self, src, tgt_in, tgt_out):
        hidden = self._features(src, tgt_in)  # (B, T, D)
        keep = tgt_out != self.model.config.pad_id  # (B, T)
        return projected_smoothed_loss(
            hidden[keep],  # (N, D)
            self.model.embedding.weight,
            tgt_out[keep],  # (N,)
            self.smoothing,
        )
