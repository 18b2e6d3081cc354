"""Spike-correct operators: running means of outputs equal the op of the inputs' running means."""
import torch

from snnconvert.runtime.operators import MatMul
from snnconvert.runtime import ExpectationCompensated, reset_states


def _spikes(shape, rate, theta, generator):
    return (torch.rand(shape, generator=generator) < rate).float() * theta


def test_compensated_product_running_mean_is_product_of_running_means():
    g = torch.Generator().manual_seed(0)
    op = ExpectationCompensated(MatMul(), bilinear=True)
    a_sum = torch.zeros(2, 3, 5, 4, dtype=torch.float64)
    b_sum = torch.zeros(2, 3, 4, 6, dtype=torch.float64)
    out_sum = torch.zeros(2, 3, 5, 6, dtype=torch.float64)
    for t in range(1, 129):
        a = _spikes((2, 3, 5, 4), 0.3, 0.7, g).double()
        b = _spikes((2, 3, 4, 6), 0.6, 1.3, g).double()
        a_sum += a
        b_sum += b
        out_sum += op(a, b)
        expected = (a_sum / t) @ (b_sum / t)
        assert torch.allclose(out_sum / t, expected, rtol=1e-12, atol=1e-12)


def test_compensated_product_float32_precision():
    g = torch.Generator().manual_seed(1)
    op = ExpectationCompensated(MatMul(), bilinear=True)
    a_sum = b_sum = out_sum = 0
    for _ in range(256):
        a, b = _spikes((8, 16), 0.5, 1.0, g), _spikes((16, 8), 0.5, 1.0, g)
        a_sum, b_sum, out_sum = a_sum + a, b_sum + b, out_sum + op(a, b)
    expected = (a_sum / 256) @ (b_sum / 256)
    assert torch.allclose(out_sum / 256, expected, atol=1e-5)


def test_per_step_product_is_biased_for_independent_streams():
    # E[a_t·b_t] = E[a]E[b] here, but correlated streams break it: b = a.
    g = torch.Generator().manual_seed(2)
    op = ExpectationCompensated(MatMul(), bilinear=True)
    comp = per_step = a_sum = 0
    for _ in range(64):
        a = _spikes((1, 32), 0.5, 1.0, g)
        comp = comp + op(a, a.T)
        per_step = per_step + a @ a.T
        a_sum = a_sum + a
    mean_a = a_sum / 64
    assert torch.allclose(comp / 64, mean_a @ mean_a.T, atol=1e-5)
    assert (per_step / 64 - mean_a @ mean_a.T).abs().item() > 1.0


def test_compensated_softmax_running_mean():
    g = torch.Generator().manual_seed(3)
    op = ExpectationCompensated(torch.nn.Softmax(dim=-1))
    bias = torch.randn(4, 7, generator=g)
    s_sum = out_sum = 0
    for t in range(1, 65):
        s = _spikes((4, 7), 0.4, 2.0, g) + bias
        s_sum, out_sum = s_sum + s, out_sum + op(s)
        assert torch.allclose(out_sum / t, torch.softmax(s_sum / t, -1), atol=1e-6)


def test_reset_states_clears_operator_state():
    op = ExpectationCompensated(MatMul(), bilinear=True)
    a, b = torch.ones(2, 2), torch.ones(2, 2)
    first = op(a, b).clone()
    op(a, b)
    reset_states(torch.nn.Sequential(op))
    assert op.t == 0 and torch.equal(op(a, b), first)
