"""Directly trained spiking transformers: Spikformer (Zhou et al., ICLR 2023) and the survey's
simple spiking ViT, registered with timm (``timm.create_model("spikformer_nano", …)``).

Both are single-step models: one call is one time step (state lives in the neurons), so the
simulator that runs converted models runs these too; :class:`SpikingClassifier` unrolls one over
T steps for training (the loss is taken on the mean of the T outputs).

Spikformer (per step; SN is a trainable spiking neuron, BN normalizes channels):

* SPS stem: four ``Conv3×3 → BN → SN`` with D/8, D/4, D/2, D channels, max-pool (3, 2, 1) after
  the SN of the last two; then ``x + SN(BN(Conv3×3(x)))`` (relative position embedding)
* block: ``x + SSA(x)``, then ``x + MLP(x)``;  MLP: ``SN(BN(Linear(SN(BN(Linear(x))))))``
* SSA: ``Q, K, V = SN(BN(x·W))``; per head ``SN_{0.5}(Q·Kᵀ·V·s)`` (threshold 0.5, no softmax,
  s = 0.125); then ``SN(BN(Linear(·)))``
* head: Linear on the mean over tokens

With ``dynamic_timesteps=(T_max, T_init)`` every SN gets a learned time-step mask
(:mod:`snnconvert.direct.dynamic_timesteps`), in the mask-loss group ``sps`` (stem and position
embedding), ``qkv`` (Q, K, V), ``attn`` (the attention's SN and its projection) or ``mlp``.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from timm.models import register_model
from torch import fx, nn

from snnconvert.convert.fold import fold_batchnorms
from snnconvert.graph.shapes import annotate, example_input
from snnconvert.graph.trace import trace
from snnconvert.prepare.norm import ChannelBatchNorm
from snnconvert.direct.dynamic_timesteps import TimestepMask
from snnconvert.direct.encoding import Encoder
from snnconvert.direct.neurons import make_node
from snnconvert.runtime.operators import MatMul
from snnconvert.runtime.state import reset_states, set_steps

#: neuron settings every model takes: ``neuron`` (if, lif, plif, klif), ``surrogate``, ``tau``,
#: ``reset`` (hard or soft), ``detach_reset``, and ``dynamic_timesteps``: ``(T_max, T_init)`` to
#: give every spiking layer a time-step mask (:mod:`snnconvert.direct.dynamic_timesteps`), or None
NeuronArgs = dict[str, Any]


def _node(args: NeuronArgs, group: str, threshold: float = 1.0) -> nn.Module:
    """A neuron of layer group ``group`` (``sps``, ``qkv``, ``attn``, ``mlp``: what a mask loss selects)."""
    args = dict(args)
    dynamic = args.pop("dynamic_timesteps", None)
    mask = TimestepMask(*dynamic, group=group) if dynamic is not None else None
    return make_node(args.pop("neuron", "lif"), threshold=threshold, timestep_mask=mask, **args)


class _LinearBNNode(nn.Sequential):
    """``SN(BN(Linear(x)))`` on ``[B, N, C]`` tokens."""

    def __init__(self, dim_in: int, dim_out: int, neuron: NeuronArgs, group: str, threshold: float = 1.0):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)
        self.bn = ChannelBatchNorm(dim_out)
        self.sn = _node(neuron, group, threshold)


class SpikingSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, neuron: NeuronArgs, scale: float = 0.125):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} does not split into {heads} heads")
        self.heads, self.scale = heads, scale
        self.q, self.k, self.v = (_LinearBNNode(dim, dim, neuron, "qkv") for _ in range(3))
        self.qk, self.av = MatMul(), MatMul()
        self.attn_sn = _node(neuron, "attn", threshold=0.5)
        self.proj = _LinearBNNode(dim, dim, neuron, "attn")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(B, N, self.heads, C // self.heads).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        y = self.attn_sn(self.av(self.qk(q, k.transpose(-2, -1)), v) * self.scale)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class SpikingMlp(nn.Sequential):
    def __init__(self, dim: int, hidden: int, neuron: NeuronArgs):
        super().__init__()
        self.fc1 = _LinearBNNode(dim, hidden, neuron, "mlp")
        self.fc2 = _LinearBNNode(hidden, dim, neuron, "mlp")


class SpikformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, neuron: NeuronArgs):
        super().__init__()
        self.attn = SpikingSelfAttention(dim, heads, neuron)
        self.mlp = SpikingMlp(dim, int(dim * mlp_ratio), neuron)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


class SpikingPatchSplitting(nn.Module):
    """SPS: the convolutional stem that turns an image into spike tokens ``[B, N, D]``."""

    def __init__(self, in_chans: int, dim: int, neuron: NeuronArgs):
        super().__init__()
        widths = [in_chans, dim // 8, dim // 4, dim // 2, dim]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(widths[i], widths[i + 1], 3, padding=1, bias=False),
                       nn.BatchNorm2d(widths[i + 1]), _node(neuron, "sps")]
            if i >= 2:
                layers.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*layers)
        self.rpe = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.BatchNorm2d(dim), _node(neuron, "sps"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.rpe(x)
        return x.flatten(2).transpose(1, 2)


class Spikformer(nn.Module):
    """Spikformer-``depth``-``embed_dim`` for ``img_size`` inputs (one time step per call)."""

    def __init__(self, img_size: int = 28, in_chans: int = 1, num_classes: int = 10, embed_dim: int = 64,
                 depth: int = 2, num_heads: int = 4, mlp_ratio: float = 4.0, **neuron: Any):
        super().__init__()
        self.num_classes = num_classes
        self.patch_embed = SpikingPatchSplitting(in_chans, embed_dim, neuron)
        self.blocks = nn.Sequential(*[SpikformerBlock(embed_dim, num_heads, mlp_ratio, neuron) for _ in range(depth)])
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.patch_embed(x)).mean(1))


class SoftmaxAttention(nn.Module):
    """Real-valued multi-head self-attention, every op a module (so the energy counter sees it)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} does not split into {heads} heads")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.qk, self.av, self.softmax = MatMul(), MatMul(), nn.Softmax(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = self.softmax(self.qk(q, k.transpose(-2, -1)) * self.scale)
        return self.proj(self.av(attn, v).transpose(1, 2).reshape(B, N, C))


class SpikingVitBlock(nn.Module):
    """Pre-norm ViT block whose MLP activation is a spiking neuron (softmax attention stays real)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, neuron: NeuronArgs):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SoftmaxAttention(dim, heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), _node(neuron, "mlp"), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SpikingViT(nn.Module):
    """The survey's simple spiking ViT: conv patch embedding, class token and position embedding,
    pre-norm blocks with spiking MLPs, a head on the class token (one time step per call)."""

    def __init__(self, img_size: int = 28, patch_size: int = 4, in_chans: int = 1, num_classes: int = 10,
                 embed_dim: int = 64, depth: int = 4, num_heads: int = 4, mlp_ratio: float = 2.0, **neuron: Any):
        super().__init__()
        self.num_classes = num_classes
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        tokens = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, embed_dim) * 0.02)
        self.blocks = nn.Sequential(*[SpikingVitBlock(embed_dim, num_heads, mlp_ratio, neuron) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class SpikingClassifier(nn.Module):
    """An encoder and a single-step network unrolled over T steps: ``forward`` resets the state and
    returns the mean of the T outputs (what training differentiates, through time);
    :meth:`stepper` is the single-step model the simulator runs."""

    def __init__(self, network: nn.Module, encoder: Encoder, timesteps: int):
        super().__init__()
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        self.network, self.encoder, self.timesteps = network, encoder, timesteps

    def stepper(self) -> nn.Sequential:
        """One time step: encoder, then network (sharing this model's modules)."""
        return nn.Sequential(self.encoder, self.network)

    def for_inference(self, example: torch.Tensor) -> fx.GraphModule:
        """A copy of :meth:`stepper` in eval mode, as a graph traced on ``example`` (an input batch)
        with every BatchNorm folded into its Linear / Conv: what the simulator runs and the energy
        accounting reads."""
        step, _ = trace(copy.deepcopy(self.stepper()).eval(), example, reset=reset_states)
        step.meta["input_shape"] = tuple(example.shape[1:])
        fold_batchnorms(step)
        annotate(step, example_input(step))
        reset_states(step)
        return step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The mean output of T steps, run as one call of T steps (``[T·N, …]`` between the neurons:
        a BatchNorm's statistics are those of all T·N rows, as in Spikformer's multi-step mode, so
        they include steps a time-step mask silenced, as inference does)."""
        reset_states(self)
        set_steps(self, self.timesteps)
        try:
            out = self.stepper()(x.expand(self.timesteps, *x.shape).flatten(0, 1))
        finally:
            set_steps(self, 1)
        return out.unflatten(0, (self.timesteps, -1)).mean(0)


def _timm_entry(cls: type[nn.Module], defaults: dict[str, Any]):
    def create(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise RuntimeError(f"{cls.__name__} has no pretrained weights: train it (snnconvert direct-train)")
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        return cls(**{**defaults, **kwargs})
    return create


@register_model
def spikformer_nano(pretrained: bool = False, **kwargs: Any) -> Spikformer:
    """Spikformer-2-64 for 28×28 grayscale images (7×7 tokens), LIF neurons."""
    return _timm_entry(Spikformer, {"embed_dim": 64, "depth": 2, "num_heads": 4})(pretrained, **kwargs)


@register_model
def spiking_vit_nano(pretrained: bool = False, **kwargs: Any) -> SpikingViT:
    """The survey's simple spiking ViT: 4 blocks, dim 64, patch 4, for 28×28 grayscale images."""
    return _timm_entry(SpikingViT, {"embed_dim": 64, "depth": 4, "num_heads": 4})(pretrained, **kwargs)
