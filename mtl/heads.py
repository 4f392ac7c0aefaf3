"""Task heads: small networks from the encoder's sentence vector to a task's outputs."""

from __future__ import annotations

from torch import Tensor, nn


class MLPHead(nn.Module):
    """dropout → [Linear → GELU → dropout] → Linear: a linear probe, or one hidden layer."""

    def __init__(
        self, in_features: int, out_features: int, hidden: int | None = None, dropout: float = 0.1
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(in_features, hidden), nn.GELU(), nn.Dropout(dropout)]
            in_features = hidden
        layers.append(nn.Linear(in_features, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.net(pooled)  # (B, C) -> (B, out_features)
