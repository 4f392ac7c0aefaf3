"""Loss balancing: how the per-task losses of a step become the update that is optimized.

The interface and the shared gradient-level machinery are in base.py; each method is one file.
"""

from mtl.balancing.base import Backprop, GradientBalancer, LossBalancer, flat_gradients
from mtl.balancing.dwa import DynamicWeightAverage
from mtl.balancing.pcgrad import PCGrad
from mtl.balancing.rlw import RandomLossWeighting
from mtl.balancing.static import StaticBalancer
from mtl.balancing.uncertainty import UncertaintyBalancer

__all__ = [
    "Backprop",
    "DynamicWeightAverage",
    "GradientBalancer",
    "LossBalancer",
    "PCGrad",
    "RandomLossWeighting",
    "StaticBalancer",
    "UncertaintyBalancer",
    "flat_gradients",
]
