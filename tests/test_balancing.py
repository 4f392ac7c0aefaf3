"""Loss balancers: formulas on known inputs, uncertainty weighting on a synthetic problem, and
the gradient-level machinery every gradient balancer shares."""

import random

import pytest
import torch

from mtl.balancing import (
    Backprop,
    DynamicWeightAverage,
    GradientBalancer,
    PCGrad,
    RandomLossWeighting,
    StaticBalancer,
    UncertaintyBalancer,
)
from mtl.balancing.pcgrad import pcgrad

NAMES = ["a", "b"]


def test_static_weights_are_the_task_loss_weights():
    balancer = StaticBalancer(NAMES, {"a": 2.0, "b": 0.5})
    total = balancer.combine({"a": torch.tensor(1.0), "b": torch.tensor(4.0)}, step=0)
    assert float(total) == pytest.approx(4.0)
    assert balancer.weights() == {"a": 2.0, "b": 0.5}


def test_pcgrad_leaves_non_conflicting_gradients_unchanged():
    g = [torch.tensor([1.0, 0.0]), torch.tensor([0.5, 2.0])]  # g1·g2 = 0.5 > 0
    assert torch.equal(pcgrad(g, random.Random(0)), g[0] + g[1])


def test_pcgrad_removes_the_conflicting_component():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # g1·g2 = -1 < 0
    # g1' = g1 − (g1·g2/‖g2‖²) g2 = (0.5, 0.5); g2' = g2 − (g2·g1/‖g1‖²) g1 = (0, 1)
    update = pcgrad([g1, g2], random.Random(0))
    assert torch.allclose(update, torch.tensor([0.5, 1.5]))
    assert PCGrad(NAMES, {}).gradient_level


def test_pcgrad_of_two_conflicting_gradients_matches_the_closed_form():
    """Two tasks: each gradient loses its component along the other's (original) gradient,
    u = g1 + g2 − (d/‖g2‖²)·g2 − (d/‖g1‖²)·g1 with d = g1·g2 < 0, whatever the order drawn."""
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for seed in range(50):
        g1, g2 = torch.randn(2, 7, generator=gen, dtype=torch.float64)
        d = torch.dot(g1, g2)
        if d >= 0:
            continue
        expected = g1 + g2 - d / g2.dot(g2) * g2 - d / g1.dot(g1) * g1
        assert torch.allclose(pcgrad([g1, g2], random.Random(seed)), expected)
        checked += 1
    assert checked > 10


def test_dwa_weights_the_task_whose_loss_falls_slowest():
    dwa = DynamicWeightAverage(NAMES, {}, temperature=2.0, period=2)
    assert dwa.weights() == {"a": 1.0, "b": 1.0}  # the first two periods
    losses_b = [4.0, 4.0, 2.0, 2.0, 1.0, 1.0]
    for step, lb in enumerate(losses_b):
        dwa.end_step({"a": 1.0, "b": lb}, step)
    # last two periods: r_a = 1/1, r_b = 1/2 -> w = 2·softmax(r / 2)
    e_a, e_b = torch.exp(torch.tensor(0.5)), torch.exp(torch.tensor(0.25))
    w = dwa.weights()
    assert w["a"] == pytest.approx(float(2 * e_a / (e_a + e_b)))
    assert w["a"] + w["b"] == pytest.approx(2.0) and w["a"] > w["b"]


def test_rlw_weights_are_random_per_step_and_reproducible():
    rlw = RandomLossWeighting(NAMES, {}, seed=3)
    w0, w1 = rlw.step_weights(0), rlw.step_weights(1)
    assert sum(w0.values()) == pytest.approx(2.0) and w0 != w1
    assert RandomLossWeighting(NAMES, {}, seed=3).step_weights(0) == w0
    losses = {"a": torch.tensor(1.0), "b": torch.tensor(1.0)}
    assert float(rlw.combine(losses, step=1)) == pytest.approx(2.0)
    assert rlw.weights() == w1


def test_uncertainty_weighting_learns_larger_sigma_for_noisier_task():
    """Two regression targets of one input, with noise sd 0.1 (a) and 1.0 (b): the learned
    σ² approaches each task's residual variance, so σ_b > σ_a and b gets the smaller weight."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=gen)
    w_true = torch.randn(4, 2, generator=gen)
    y = x @ w_true + torch.randn(512, 2, generator=gen) * torch.tensor([0.1, 1.0])
    model = torch.nn.Linear(4, 2)
    balancer = UncertaintyBalancer(NAMES, {})
    optimizer = torch.optim.Adam([*model.parameters(), *balancer.parameters()], lr=0.05)
    for step in range(400):
        residual = model(x) - y
        losses = {"a": residual[:, 0].pow(2).mean(), "b": residual[:, 1].pow(2).mean()}
        optimizer.zero_grad()
        balancer.combine(losses, step).backward()
        optimizer.step()
    sigma = torch.exp(0.5 * balancer.log_var.detach())
    assert sigma[1] > 3 * sigma[0]
    assert float(sigma[1]) == pytest.approx(1.0, rel=0.2)  # σ² → the noise variance
    assert balancer.weights()["a"] > balancer.weights()["b"]


class FirstTask(GradientBalancer):
    """Steps on the first task's gradient alone, recording what it was given."""

    def combine_gradients(self, grads, step):
        self.given = (torch.stack(grads), step)
        return grads[0]


def backprop(shared, own, rank_mean=lambda t: t) -> Backprop:
    return Backprop(backward=torch.Tensor.backward, shared=shared, own=own, rank_mean=rank_mean,
                    distributed=False)  # fmt: skip


def test_gradient_balancer_combines_weighted_task_gradients_of_a_window_averaged_over_ranks():
    """Shared w, own heads h_a, h_b; L_a = (w·x)·h_a, L_b = (w·x)²·h_b with weights 2 and 0.5.
    Two batches in the window: each task's gradient on w is summed over both, passed through
    the rank mean (here: halved), combined, and written to w.grad; heads get their own."""
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    h = {"a": torch.nn.Parameter(torch.tensor(3.0)), "b": torch.nn.Parameter(torch.tensor(1.0))}
    x = torch.tensor([2.0, 1.0])  # w·x = 1
    balancer = FirstTask(NAMES, {"a": 2.0, "b": 0.5})
    ctx = backprop([w], {n: [p] for n, p in h.items()}, rank_mean=lambda t: t / 2)
    for step in range(2):
        z = w @ x
        total = balancer.backward({"a": z * h["a"], "b": z**2 * h["b"]}, step, ctx)
        assert float(total) == pytest.approx(2 * 3 + 0.5 * 1)
    balancer.before_optimizer_step(ctx, step=7)
    grads, step = balancer.given
    g_a, g_b = 2 * 3 * x, 0.5 * 2 * 1 * x  # ∇_w (weight · L_i) at w·x = 1
    assert torch.allclose(grads, torch.stack([g_a, g_b]))  # 2 batches summed, then halved
    assert step == 7
    assert torch.equal(w.grad, grads[0])
    assert float(h["a"].grad) == pytest.approx(2 * 2 * 1) and float(h["b"].grad) == 2 * 0.5


def test_gradient_balancer_with_nothing_shared_sums_the_weighted_losses():
    """A frozen encoder: no per-task gradients to combine, the balanced loss is backpropagated."""
    h = torch.nn.Parameter(torch.tensor(2.0))
    ctx = backprop([], {"a": [h], "b": [h]})
    balancer = PCGrad(NAMES, {"a": 1.0, "b": 0.5})
    total = balancer.backward({"a": 3 * h, "b": h * h}, 0, ctx)
    assert float(total) == pytest.approx(3 * 2 + 0.5 * 4)
    assert float(h.grad) == pytest.approx(3 + 0.5 * 2 * 2)
    balancer.before_optimizer_step(ctx, step=0)
    assert float(h.grad) == pytest.approx(5.0)
