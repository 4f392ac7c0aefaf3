"""Static loss weights."""

from mtl.balancing.base import LossBalancer


class StaticBalancer(LossBalancer):
    """Static weights: L = Σ_i w_i L_i, with w_i the task's `loss_weight`."""
