"""mtl's CPU dropout: the distribution F.dropout promises, from a quarter of a draw each."""

import pytest
import torch

from mtl.dropout import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keeps_each_element_with_probability_one_minus_p_and_rescales(p):
    torch.manual_seed(0)
    x = torch.ones(1000, 1001)  # not a multiple of 4: the last draw is partly used
    y = dropout(x, p)
    kept = y != 0
    for offset in range(4):  # each quarter of every 64-bit draw
        lane = kept.flatten()[offset::4]
        assert lane.float().mean().item() == pytest.approx(1 - p, abs=0.004)
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)), rtol=1e-4)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # unbiased in expectation


def test_masks_are_independent_of_position_and_seeded():
    torch.manual_seed(1)
    a = dropout(torch.ones(256, 256), 0.1) != 0
    rows, cols = a.float().mean(1), a.float().mean(0)
    assert rows.std() < 0.04 and cols.std() < 0.04  # no striping over rows or columns
    torch.manual_seed(1)
    assert torch.equal(a, dropout(torch.ones(256, 256), 0.1) != 0)  # the seed reproduces it
    assert not torch.equal(a, dropout(torch.ones(256, 256), 0.1) != 0)


def test_kept_values_and_their_gradients_are_exactly_scaled_as_f_dropouts():
    torch.manual_seed(0)
    x = torch.randn(64, 64, dtype=torch.bfloat16, requires_grad=True)
    y = dropout(x, 0.25)  # 1 / (1 - p) = 4/3: p is exact in 1/65536 steps
    upstream = torch.randn(64, 64, dtype=torch.bfloat16)
    y.backward(upstream)
    kept = y.detach() != 0
    assert 0.7 < kept.float().mean() < 0.8
    assert torch.equal(y[kept], (x.detach() * (1 / 0.75))[kept])  # rounded once, in bf16
    assert torch.all(x.grad[~kept] == 0)
    assert torch.equal(x.grad[kept], (upstream * (1 / 0.75))[kept])


def test_identity_in_eval_mode_and_at_zero():
    x = torch.randn(8, 8)
    module = Dropout(0.3).eval()
    assert module(x) is x and dropout(x, 0.0) is x
