"""An IF neuron with reset by subtraction reproduces QCFS on constant input."""
import pytest
import torch

from snnconvert.convert import QCFS
from snnconvert.convert.qcfs import qcfs
from snnconvert.runtime import IFNeuron


def _if_mean(z: torch.Tensor, theta: torch.Tensor, steps: int) -> torch.Tensor:
    neuron = IFNeuron(theta)
    return sum(neuron(z) for _ in range(steps)) / steps


@pytest.mark.parametrize("levels", [1, 4, 8, 16])
def test_if_equals_qcfs_at_t_equals_levels(levels):
    theta = torch.tensor(1.7)
    z = torch.rand(20000, generator=torch.Generator().manual_seed(levels)) * 4.0 - 1.0  # beyond both clip ends
    assert torch.allclose(_if_mean(z, theta, levels), qcfs(z, theta, levels), atol=1e-6)


def test_if_matches_finer_qcfs_at_multiples_of_levels():
    theta = torch.tensor(2.0)
    z = torch.rand(1000) * 2.5
    for steps in (16, 32, 64):
        assert torch.allclose(_if_mean(z, theta, steps), qcfs(z, theta, steps), atol=1e-6)


def test_channel_wise_threshold():
    theta = torch.tensor([0.5, 1.0, 2.0]).view(3, 1)
    z = torch.rand(3, 100) * 2
    assert torch.allclose(_if_mean(z, theta, 8), qcfs(z, theta, 8), atol=1e-6)


def test_if_rejects_nonpositive_threshold():
    with pytest.raises(ValueError, match="positive"):
        IFNeuron(torch.tensor([1.0, 0.0]))


def test_if_reset_restores_initial_potential():
    neuron = IFNeuron(torch.tensor(1.0))
    first = [neuron(torch.full((5,), 0.3)).clone() for _ in range(7)]
    neuron.reset()
    second = [neuron(torch.full((5,), 0.3)).clone() for _ in range(7)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_qcfs_values_and_straight_through_gradient():
    act = QCFS(levels=4, threshold=2.0)
    x = torch.tensor([-1.0, 0.2, 0.3, 1.0, 1.2, 5.0], requires_grad=True)
    y = act(x)
    # λ·clip(floor(x·L/λ + 1/2)/L, 0, 1) with λ = 2, L = 4
    assert torch.allclose(y, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0, 2.0]))
    y.sum().backward()
    # floor passes gradients through inside the range; the clip stops them outside
    assert torch.allclose(x.grad, torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 0.0]))
    assert act.threshold.grad is not None and act.threshold.grad.abs() > 0
