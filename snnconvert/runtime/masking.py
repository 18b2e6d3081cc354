"""Random Spike Masking (MST paper §3.4): the mask that drops spikes at random.

Each element survives with probability 1 − p: ``s_t ← s_t ⊙ m_t``, ``m_t ~ Bernoulli(1 − p)`` drawn
independently per element and step (no rescaling, unlike dropout). Where masks go is decided by
:mod:`snnconvert.prepare.rsm`.
"""
from __future__ import annotations

import torch
from torch import nn

from snnconvert.runtime.state import StatefulModule


class RandomSpikeMask(StatefulModule):
    """Keep each element of the input with probability ``1 − ratio`` (no rescaling).

    In training mode draws come from torch's global generator, like dropout (so the trainer's seed
    and RNG checkpoints make them reproducible and resumable). Otherwise they come from the
    module's own generator, seeded with ``seed`` for batch 0 and restarted by :meth:`reseed` —
    the simulator and :func:`evaluate` reseed every mask for each batch, so a result depends on
    the seeds and the data only, and an interrupted simulation resumes to the same counts.
    ``ratio = 0`` returns the input itself. An exported step (:mod:`snnconvert.export`) draws from
    its runtime's generator, so its masks are not those of a PyTorch simulation. Taking K steps per call, it draws each step's mask in
    turn, as K single steps would.
    """

    emits_spikes = True  # what passes is spikes (the energy counter's sources)

    def __init__(self, ratio: float, seed: int = 0):
        super().__init__()
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"masking ratio must be in [0, 1), got {ratio}")
        self.ratio, self.seed = ratio, seed
        self._batch = 0
        self._generator: torch.Generator | None = None
        self.reset()

    def reseed(self, batch: int = 0) -> None:
        """Start the mask sequence of sample batch ``batch`` (``seed`` + batch · 2³²)."""
        self._batch = batch
        self._generator = None

    def step(self, x: torch.Tensor) -> torch.Tensor:
        if self.ratio == 0.0:
            return x
        if self.training or torch.jit.is_tracing():  # an exported step draws from its runtime's generator
            return x * (torch.rand_like(x) >= self.ratio)
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device).manual_seed(self.seed + (self._batch << 32))
        keep = torch.rand(x.shape, generator=self._generator, device=x.device, dtype=x.dtype) >= self.ratio
        return x * keep

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, seed={self.seed}"


def reseed_masks(model: nn.Module, batch: int = 0) -> None:
    """Restart every mask of ``model`` at the sequence of sample batch ``batch``."""
    for m in model.modules():
        if isinstance(m, RandomSpikeMask):
            m.reseed(batch)
