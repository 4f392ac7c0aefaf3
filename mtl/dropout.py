"""Inverted dropout (Srivastava et al. 2014) with cheaper masks on the CPU.

On a CPU, `F.dropout` draws one Bernoulli sample per element from the serial Mersenne
Twister; for MiniLM's bf16 training that was about a sixth of a step. Here each 64-bit draw
gives four 16-bit uniforms, each kept with probability 1 − p (p rounded to 1/65536): the same
distribution up to that rounding, the same generator (so seeds and resumed runs reproduce).
The mask is made with integer arithmetic and applied by multiplication (boolean masks and
`torch.where` are several times slower on bf16 here). On other devices `F.dropout` is
already cheap and is used as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _Masked(torch.autograd.Function):
    """y = x · mask · scale, and the same for the gradient (mask: 0 or 1 in x's dtype)."""

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return torch.addcmul(mask.new_zeros(()), x, mask, value=scale)  # one rounding, as x·scale

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (mask,) = ctx.saved_tensors
        return torch.addcmul(mask.new_zeros(()), grad, mask, value=ctx.scale), None, None


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """x with each element zeroed with probability p, the rest scaled by 1 / (1 − p)."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    n = x.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits
    uniform16 = draws.view(torch.int16)[:n].view(x.shape)  # uniform on [-32768, 32767]
    dropped = min(round(p * 65536), 65535)  # p < 1 keeps something
    least_kept = dropped - 32768  # P(uniform16 >= least_kept) = 1 - dropped / 65536
    keep = uniform16.clamp(least_kept - 1, least_kept).sub_(least_kept - 1)  # 0 or 1
    return _Masked.apply(x, keep.to(x.dtype), 65536 / (65536 - dropped))


class Dropout(nn.Module):
    """`dropout` as a module (no parameters: checkpoints are unchanged)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
