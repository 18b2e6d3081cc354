"""Fused attention as explicit ops, so conversion sees its products and its softmax.

``F.scaled_dot_product_attention(q, k, v, mask)`` becomes, under the module that called it::

    qk(q, kᵀ) · scale (+ mask) ──► softmax ──► av(·, v)

with ``qk``/``av`` :class:`~snnconvert.runtime.operators.MatMul` modules and an ``nn.Softmax``: the
same function (up to float rounding). The MST site rules then put QCFS on Q, K, V, the scaled
scores and the attention output (:mod:`snnconvert.prepare.sites`), and conversion makes the
products and the softmax spike-correct.
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from snnconvert.errors import UnsupportedLayersError
from snnconvert.graph.edit import add_module, join, new_node, owner
from snnconvert.graph.shapes import shape
from snnconvert.runtime.operators import MatMul


def _argument(node: fx.Node, position: int, name: str, default):
    return node.args[position] if len(node.args) > position else node.kwargs.get(name, default)


def decompose_attention(gm: fx.GraphModule) -> list[str]:
    """Rewrite every fused attention of ``gm`` in place; returns the modules that called them.

    Raises:
        UnsupportedLayersError: for attention with dropout left on or grouped-query heads.
    """
    done, refused = [], []
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not F.scaled_dot_product_attention:
            continue
        where = owner(node)
        if _argument(node, 4, "dropout_p", 0.0) or node.kwargs.get("enable_gqa", False):
            refused.append((where, "scaled_dot_product_attention", "attention dropout or grouped-query heads"))
            continue
        _decompose(gm, node, where)
        done.append(where)
    if refused:
        raise UnsupportedLayersError(refused)
    return done


def _decompose(gm: fx.GraphModule, node: fx.Node, where: str) -> None:
    q, k, v = node.args[:3]
    mask = _argument(node, 3, "attn_mask", None)
    causal = _argument(node, 5, "is_causal", False)
    scale = _argument(node, 6, "scale", None)
    if scale is None:
        scale = shape(q)[-1] ** -0.5
    with gm.graph.inserting_before(node):
        k_t = new_node(gm, node, "call_method", "transpose", (k, -2, -1))
        scores = new_node(gm, node, "call_module", add_module(gm, join(where, "qk"), MatMul()), (q, k_t))
        scores = new_node(gm, node, "call_function", operator.mul, (scores, scale))
        if causal:
            rows, columns = (new_node(gm, node, "call_method", "size", (x, -2)) for x in (q, k))
            device = new_node(gm, node, "call_function", getattr, (q, "device"))
            mask = new_node(gm, node, "call_function", _causal, (rows, columns, device))
        if mask is not None:
            if causal or mask.meta.get("dtype") == torch.bool:
                dtype = new_node(gm, node, "call_function", getattr, (q, "dtype"))
                mask = new_node(gm, node, "call_function", _bool_to_additive, (mask, dtype))
            scores = new_node(gm, node, "call_function", operator.add, (scores, mask))
        probabilities = new_node(gm, node, "call_module", add_module(gm, join(where, "softmax"), nn.Softmax(dim=-1)),
                                 (scores,))
        out = new_node(gm, node, "call_module", add_module(gm, join(where, "av"), MatMul()), (probabilities, v))
    node.replace_all_uses_with(out)
    gm.graph.erase_node(node)


def _bool_to_additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean attention mask (True: attend) as an additive one (0 or −inf)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


def _causal(rows: int, columns: int, device: torch.device) -> torch.Tensor:
    """The causal mask of scaled-dot-product attention: query i attends to keys ≤ i."""
    return torch.ones(rows, columns, dtype=torch.bool, device=device).tril()
