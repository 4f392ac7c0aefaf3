"""Inverted dropout (Srivastava et al. 2014) with cheaper masks on the CPU.

On a CPU, `F.dropout` draws one Bernoulli sample per element from the serial Mersenne
Twister; for MiniLM's bf16 training that was about a sixth of a step. Here each 64-bit draw
gives four 16-bit uniforms, each kept with probability 1 − p (p rounded to 1/65536): an
eighth of the generator's 32-bit outputs, the same distribution up to that rounding, the same
generator (so seeds and resumed runs reproduce). On other devices `F.dropout` is already
cheap and is used as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """x with each element zeroed with probability p, the rest scaled by 1 / (1 − p)."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    n = x.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits
    uniform16 = draws.view(torch.int16)[:n].view(x.shape)  # uniform on [-32768, 32767]
    dropped = round(p * 65536)
    keep = uniform16 >= dropped - 32768  # P(keep) = 1 - dropped / 65536
    return torch.where(keep, x * (65536 / (65536 - dropped)), 0.0)


class Dropout(nn.Module):
    """`dropout` as a module (no parameters: checkpoints are unchanged)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
