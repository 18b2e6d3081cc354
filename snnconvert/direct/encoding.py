"""Input encodings: a static image → the input of each time step; event streams → frames.

Images arrive normalized with the dataset's mean and std; the spike encoders first map them back to
intensities ``p ∈ [0, 1]``. At step t (0-based):

* ``direct``: the image itself, every step (the first layer sees real values; Spikformer's choice)
* ``rate``: ``s_t ~ Bernoulli(p)`` (Poisson-like rate code; torch's generator)
* ``latency``: one spike at ``t_s = round((1 − p)·(T − 1))``, brighter earlier; ``p = 0`` never fires
* ``phase``: ``q = min(round(p·2^K), 2^K − 1)`` in K bits ``b_0 b_1 …`` (most significant first);
  step t emits the weighted spike ``2^−(1+k)·b_k`` with ``k = t mod K``, so every K steps sum to
  ``q/2^K = p`` within 2^−K
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from snnconvert.errors import SnnConvertError
from snnconvert.runtime.state import StatefulModule


class Encoder(StatefulModule):
    """Base: counts steps since :meth:`reset`; :meth:`encode` gives step t's input."""

    emits_spikes = False

    def __init__(self, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)
        self.reset()

    def intensity(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized images back to intensities in [0, 1]."""
        return (x * self.std + self.mean).clamp(0, 1)

    def encode(self, x: torch.Tensor, t: int) -> torch.Tensor:
        raise NotImplementedError

    def step(self, x: torch.Tensor) -> torch.Tensor:
        self.t = self.t + 1  # not in place: an exported step shares one counter
        return self.encode(x, self.t - 1)


class DirectEncoder(Encoder):
    def encode(self, x, t):
        return x


class PoissonEncoder(Encoder):
    """Bernoulli spikes each step with probability the pixel's intensity (Poisson spike trains)."""

    emits_spikes = True

    def encode(self, x, t):
        p = self.intensity(x)
        return (torch.rand_like(p) < p).to(x.dtype)


class LatencyEncoder(Encoder):
    emits_spikes = True

    def __init__(self, timesteps: int, **kwargs):
        super().__init__(**kwargs)
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        self.timesteps = timesteps

    def encode(self, x, t):
        p = self.intensity(x)
        fire_at = torch.round((1 - p) * (self.timesteps - 1))
        return ((fire_at == t) & (p > 0)).to(x.dtype)


class PhaseEncoder(Encoder):
    emits_spikes = True

    def __init__(self, phases: int = 8, **kwargs):
        super().__init__(**kwargs)
        if not 1 <= phases <= 24:
            raise ValueError(f"phases must be in 1..24, got {phases}")
        self.phases = phases

    def encode(self, x, t):
        k = t % self.phases
        levels = torch.round(self.intensity(x) * 2 ** self.phases).long().clamp_(max=2 ** self.phases - 1)
        bit = (levels >> (self.phases - 1 - k)) & 1
        return bit.to(x.dtype) * 2.0 ** -(1 + k)


#: encoders by name: ``factory(timesteps, mean, std)``
ENCODERS: dict[str, Callable[..., Encoder]] = {
    "direct": lambda timesteps, **kw: DirectEncoder(**kw),
    "poisson": lambda timesteps, **kw: PoissonEncoder(**kw),
    "latency": lambda timesteps, **kw: LatencyEncoder(timesteps, **kw),
    "phase": lambda timesteps, **kw: PhaseEncoder(**kw),
}


def make_encoder(name: str, timesteps: int, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,)) -> Encoder:
    """The encoder called ``name`` for ``timesteps`` steps and images normalized with ``mean``/``std``."""
    if name not in ENCODERS:
        raise SnnConvertError(f"unknown encoding {name!r}; choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name](timesteps, mean=mean, std=std)


def events_to_frames(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, polarity: torch.Tensor,
                     size: tuple[int, int], frames: int) -> torch.Tensor:
    """Event stream → ``[frames, 2, H, W]`` event counts: time split into ``frames`` equal bins over
    ``[t_min, t_max]``, channel 0 for polarity ≤ 0 (off), 1 for polarity > 0 (on)."""
    height, width = size
    x, y, t = torch.as_tensor(x).long(), torch.as_tensor(y).long(), torch.as_tensor(t).double()
    on = (torch.as_tensor(polarity) > 0).long()
    if not (len(x) == len(y) == len(t) == len(on)):
        raise SnnConvertError(f"event arrays differ in length: x {len(x)}, y {len(y)}, t {len(t)}, "
                              f"polarity {len(on)}")
    if len(x) and (x.min() < 0 or x.max() >= width or y.min() < 0 or y.max() >= height):
        raise SnnConvertError(f"events fall outside the {width}×{height} sensor: pass the sensor's size")
    out = torch.zeros(frames * 2 * height * width)
    if len(x):
        span = float(t.max() - t.min()) or 1.0
        index = ((t - t.min()) / span * frames).long().clamp_(max=frames - 1)
        flat = ((index * 2 + on) * height + y) * width + x
        out.index_add_(0, flat, torch.ones(len(flat)))
    return out.reshape(frames, 2, height, width)


class ChannelReduction(nn.Module):
    """MST's reduction layer for event input: ``[B, n, C, H, W]`` (or ``[B, n·C, H, W]``) frames
    stacked on channels, a 1×1 convolution down to ``out_channels`` (3 to reuse ImageNet weights)."""

    def __init__(self, frames: int, channels: int = 2, out_channels: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(frames * channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            x = x.flatten(1, 2)
        if x.shape[1] != self.proj.in_channels:
            raise SnnConvertError(f"expected {self.proj.in_channels} stacked frame channels, got {x.shape[1]}")
        return self.proj(x)
