"""An IF neuron with reset by subtraction reproduces QCFS on constant input."""
import pytest
import torch

from snnconvert.prepare import QCFS
from snnconvert.prepare.qcfs import qcfs
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


def test_signed_if_takes_back_surplus_spikes():
    from snnconvert.runtime import SignedIFNeuron

    inputs = [0.8, 0.8, -0.9, -0.9, 0.2]
    signed, plain = SignedIFNeuron(torch.tensor(1.0)), IFNeuron(torch.tensor(1.0))
    signed_out = [signed(torch.tensor([x])).item() for x in inputs]
    plain_out = [plain(torch.tensor([x])).item() for x in inputs]
    # hand-computed: v(0) = 0.5; +1 at t = 1, 2 (v = 1.3, 1.1); −1 at t = 3, 4 (v = −0.8, −0.7)
    assert signed_out == [1.0, 1.0, -1.0, -1.0, 0.0]
    # the plain IF neuron keeps its two spikes although the cumulative input fell to 0 (unevenness)
    assert plain_out == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_signed_if_count_tracks_rounded_cumulative_input():
    from snnconvert.runtime import SignedIFNeuron

    g = torch.Generator().manual_seed(0)
    theta = torch.tensor(0.7)
    neuron = SignedIFNeuron(theta)
    total_in = total_out = torch.zeros(500)
    for t in range(1, 65):
        x = (torch.rand(500, generator=g) - 0.45) * 0.6  # within one threshold per step
        total_in, total_out = total_in + x, total_out + neuron(x)
        expected = torch.clamp(torch.floor(total_in / theta + 0.5), 0, t) * theta
        assert torch.allclose(total_out, expected, atol=1e-5)
    assert neuron.net.min() >= 0


def test_signed_if_equals_if_on_constant_input():
    from snnconvert.runtime import SignedIFNeuron

    z = torch.rand(1000) * 3 - 0.5
    theta = torch.tensor(1.3)
    a, b = SignedIFNeuron(theta), IFNeuron(theta)
    assert all(torch.equal(a(z), b(z)) for _ in range(32))


def test_signed_burst_if_tracks_exactly_with_large_steps():
    from snnconvert.runtime import NEURONS

    g = torch.Generator().manual_seed(1)
    theta = torch.tensor(0.5)
    neuron = NEURONS["signed-burst-if"](theta)
    total_in = total_out = torch.zeros(400)
    for t in range(1, 33):
        x = (torch.rand(400, generator=g) - 0.4) * 3.0  # up to several thresholds per step
        total_in, total_out = total_in + x, total_out + neuron(x)
        expected = torch.clamp(torch.floor(total_in / theta + 0.5), 0, t) * theta
        assert torch.allclose(total_out, expected, atol=1e-4)
    assert neuron.net.max() <= 32 and neuron.net.min() >= 0


def test_signed_if_rejects_bad_burst_limit():
    from snnconvert.runtime import SignedIFNeuron

    with pytest.raises(ValueError, match="max_spikes"):
        SignedIFNeuron(torch.tensor(1.0), max_spikes=0)


@pytest.mark.parametrize("levels", [None, 6])
def test_a_symmetric_signed_neuron_tracks_a_signed_qcfs(levels):
    """What a signed (stream) site becomes: its net count follows ``round(S_t/θ)`` below zero as
    above, within ``[−t, t]`` (rate coding) or ``[−L, L]`` (count coding): at count coding's end,
    the signed QCFS of the total input."""
    from snnconvert.runtime import SignedIFNeuron

    g = torch.Generator().manual_seed(2)
    theta = torch.tensor(0.5)
    neuron = SignedIFNeuron(theta, max_spikes=None, levels=levels, symmetric=True)
    total_in = total_out = torch.zeros(400)
    for t in range(1, 17):
        x = (torch.rand(400, generator=g) - 0.5) * 3.0
        total_in, total_out = total_in + x, total_out + neuron(x)
        bound = t if levels is None else levels
        expected = torch.clamp(torch.floor(total_in / theta + 0.5), -bound, bound) * theta
        assert torch.allclose(total_out, expected, atol=1e-4)
    assert neuron.net.min() < 0  # it went below zero, as a plain signed neuron cannot
    if levels is not None:
        assert torch.allclose(total_out, qcfs(total_in, theta * levels, levels, signed=True), atol=1e-4)
    site = QCFS(levels=4, threshold=2.0, signed=True, role="stream")
    assert torch.equal(site(torch.tensor([-3.0, -0.3, 0.3, 3.0])), torch.tensor([-2.0, -0.5, 0.5, 2.0]))
    assert torch.equal(site.relu_form(torch.tensor([-3.0])), torch.tensor([-3.0]))  # the ANN passes it on as is
