"""Module rules: exact rewrites, applied before tracing, of modules that hide ops from the graph.

The tracer sees through most code; a rule is only needed where a module would otherwise be a
black box or would hide an op conversion must see: a fused norm + activation (timm's
``BatchNormAct2d``: as one leaf its activation is invisible, traced through its BatchNorm would be
frozen in evaluation mode) or a torch.nn module whose forward is one opaque functional call
(``nn.MultiheadAttention``). Every rule returns a module computing the same function.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import norm_act
from timm.layers.norm import LayerNorm2d
from torch import nn

Rewrite = Callable[[nn.Module], nn.Module]
_RULES: dict[type, tuple[str, Rewrite]] = {}


def register_module_rule(cls: type, description: str, rewrite: Rewrite) -> None:
    """Rewrite every instance of exactly ``cls`` with ``rewrite`` before tracing; ``rewrite`` must
    return a module that computes the same function and traces."""
    _RULES[cls] = (description, rewrite)


def list_module_rules() -> list[str]:
    """``"module.Type: what the rule does"`` for every registered rule."""
    return sorted(f"{t.__module__}.{t.__qualname__}: {d}" for t, (d, _) in _RULES.items())


def apply_module_rules(model: nn.Module) -> dict[str, str]:
    """Rewrite, in place, every submodule that has a rule; returns ``{path: rule description}``.
    (The root itself is never rewritten.) Attention modules that can run fused (timm's
    ``fused_attn``) are switched to it: the same function, as one scaled-dot-product op."""
    applied = {}
    for name, module in list(model.named_modules()):
        if getattr(module, "fused_attn", None) is False:
            module.fused_attn = True
            applied[name] = "attention traced in its fused form (the same function)"
        rule = _RULES.get(type(module))
        if rule is None or not name:
            continue
        description, rewrite = rule
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, rewrite(module))
        applied[name] = description
    return applied


# -- fused norm + activation (timm) ------------------------------------------------------------

def _with_state(norm: nn.Module, source: nn.Module) -> nn.Module:
    """``norm`` with the parameters and buffers ``source`` shares with it (its own act/drop not included)."""
    own = set(norm.state_dict())
    norm.load_state_dict({k: v for k, v in source.state_dict().items() if k in own})
    return norm.to(next(source.parameters(), torch.empty(0)).device)


def _norm_then_act(norm: nn.Module, source: nn.Module) -> nn.Sequential:
    return nn.Sequential(OrderedDict(norm=_with_state(norm, source), drop=source.drop, act=source.act))


def _batchnorm_act(m: nn.Module) -> nn.Sequential:
    return _norm_then_act(nn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats), m)


def _groupnorm_act(m: nn.Module) -> nn.Sequential:
    return _norm_then_act(nn.GroupNorm(m.num_groups, m.num_channels, m.eps, m.affine), m)


def _layernorm_act(m: nn.Module) -> nn.Sequential:
    return _norm_then_act(nn.LayerNorm(m.normalized_shape, m.eps, m.elementwise_affine), m)


def _layernorm2d_act(m: nn.Module) -> nn.Sequential:
    return _norm_then_act(LayerNorm2d(m.normalized_shape[0], m.eps, m.elementwise_affine), m)


for _cls, _rewrite in ((norm_act.BatchNormAct2d, _batchnorm_act), (norm_act.SyncBatchNormAct, _batchnorm_act),
                       (norm_act.GroupNormAct, _groupnorm_act), (norm_act.GroupNorm1Act, _groupnorm_act),
                       (norm_act.LayerNormAct, _layernorm_act), (norm_act.LayerNormAct2d, _layernorm2d_act)):
    register_module_rule(_cls, "fused norm + activation → the norm, then the activation", _rewrite)


# -- torch.nn.MultiheadAttention ---------------------------------------------------------------

class SelfAttention(nn.Module):
    """``nn.MultiheadAttention`` used as self-attention (query, key and value the same tensor), as
    explicit Linear layers around ``F.scaled_dot_product_attention``; returns ``(output, None)``."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("only nn.MultiheadAttention with equal q/k/v sizes and no extra key/value bias")
        dim = mha.embed_dim
        self.num_heads, self.batch_first, self.dropout = mha.num_heads, mha.batch_first, mha.dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=mha.in_proj_bias is not None)
        self.qkv.weight = mha.in_proj_weight
        if mha.in_proj_bias is not None:
            self.qkv.bias = mha.in_proj_bias
        self.out_proj = mha.out_proj

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if key is not query or value is not query or key_padding_mask is not None or attn_mask is not None:
            raise NotImplementedError("only self-attention without masks converts (query, key and value the same)")
        x = query if self.batch_first else query.transpose(0, 1)
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
        y = self.out_proj(y.transpose(1, 2).reshape(B, N, C))
        return (y if self.batch_first else y.transpose(0, 1)), None


register_module_rule(nn.MultiheadAttention, "multi-head attention → Linear + scaled-dot-product attention",
                     SelfAttention)
