"""Self-attention with QCFS where the Masked Spiking Transformer places it.

Shapes: input ``[B, N, C]``; Q, K, V ``[B, heads, N, d]``; scores ``[B, heads, N, N]``.
QCFS sits on Q, K and V, on the scaled scores ``Q·Kᵀ/√d``, after ``softmax(scores + bias)·V``
and after the output projection (MST, Wang et al. ICCV 2023, Eqs. 6-7). The two products
(``qk``, ``av``) and the softmax are modules that :func:`snnconvert.convert.convert` swaps
for spike-correct operators.
"""
from __future__ import annotations

import torch
from torch import nn

from snnconvert.convert.qcfs import QCFS
from snnconvert.runtime.operators import MatMul


class SpikeAttention(nn.Module):
    """Multi-head self-attention prepared for conversion (ViT / DeiT layout).

    Args:
        qkv: the fused ``Linear(C, 3·heads·d)`` projection.
        proj: the output ``Linear(heads·d, C)``.
        num_heads: number of heads.
        levels: QCFS levels L.
        threshold: initial λ of every QCFS in the module.
    """

    def __init__(self, qkv: nn.Linear, proj: nn.Linear, num_heads: int, levels: int, threshold: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = qkv.out_features // (3 * num_heads)
        self.scale = self.head_dim ** -0.5
        self.qkv = qkv
        self.q_act = QCFS(levels, threshold, channel_axis=None)
        self.k_act = QCFS(levels, threshold, channel_axis=None)
        self.v_act = QCFS(levels, threshold, channel_axis=None)
        self.qk = MatMul()
        self.attn_act = QCFS(levels, threshold, channel_axis=None)
        self.softmax = nn.Softmax(dim=-1)
        self.av = MatMul()
        self.out_act = QCFS(levels, threshold, channel_axis=-1)
        self.proj = proj
        self.proj_act = QCFS(levels, threshold, channel_axis=-1)

    @classmethod
    def from_timm(cls, attn: nn.Module, levels: int, threshold: float) -> SpikeAttention:
        """From timm ``Attention`` (plain: no qk-norm, scale-norm or gate)."""
        return cls(attn.qkv, attn.proj, attn.num_heads, levels, threshold)

    def attend(self, x: torch.Tensor, additive_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, N, C] → [B, N, C]``; ``additive_mask`` broadcasts over ``[B, heads, N, N]``."""
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k, v = self.q_act(q), self.k_act(k), self.v_act(v)
        scores = self.attn_act(self.qk(q, k.transpose(-2, -1)) * self.scale)
        if additive_mask is not None:
            scores = scores + additive_mask
        x = self.av(self.softmax(scores), v).transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)
        return self.proj_act(self.proj(self.out_act(x)))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        if is_causal:
            raise NotImplementedError("causal attention is not supported by the spiking converter")
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=x.dtype).masked_fill(~attn_mask, float("-inf"))
        return self.attend(x, attn_mask)


class SpikeWindowAttention(SpikeAttention):
    """Swin (shifted) window attention with relative position bias, prepared for conversion.

    Input ``[B·windows, N, C]`` with ``N`` tokens per window; ``mask`` is Swin's
    ``[windows, N, N]`` additive shift mask.
    """

    def __init__(self, qkv: nn.Linear, proj: nn.Linear, num_heads: int, levels: int, threshold: float,
                 relative_position_bias_table: torch.Tensor, relative_position_index: torch.Tensor):
        super().__init__(qkv, proj, num_heads, levels, threshold)
        self.relative_position_bias_table = nn.Parameter(relative_position_bias_table.detach().clone())
        self.register_buffer("relative_position_index", relative_position_index.clone(), persistent=False)

    @classmethod
    def from_timm(cls, attn: nn.Module, levels: int, threshold: float) -> SpikeWindowAttention:
        """From timm ``WindowAttention``."""
        return cls(attn.qkv, attn.proj, attn.num_heads, levels, threshold,
                   attn.relative_position_bias_table, attn.relative_position_index)

    def relative_position_bias(self) -> torch.Tensor:
        """``[1, heads, N, N]`` bias gathered from the table."""
        n = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(n, n, -1).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        additive = self.relative_position_bias()
        if mask is not None:
            windows = mask.shape[0]
            additive = (additive + mask.unsqueeze(1)).repeat(x.shape[0] // windows, 1, 1, 1)
        return self.attend(x, additive)
