"""prepare(): every registered architecture is rewritten completely, and the rest is refused by name."""
import pytest
import torch
from torch import nn
from timm.layers import DropPath

from snnconvert.convert import ChannelBatchNorm, PrepareConfig, QCFS, prepare, qcfs_modules
from snnconvert.convert.attention import SpikeAttention, SpikeWindowAttention
from snnconvert.errors import UnsupportedLayersError

from conftest import ARCHITECTURES, tiny_swin, tiny_tv_resnet, tiny_vit

_GONE = (nn.LayerNorm, nn.GELU, nn.ReLU, nn.ReLU6, nn.Dropout, DropPath, nn.MaxPool2d, nn.AdaptiveMaxPool2d)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_prepare_leaves_nothing_unconvertible(arch):
    factory, spec = ARCHITECTURES[arch]
    model = factory()
    prepared = prepare(model, PrepareConfig(levels=4))
    assert not [type(m).__name__ for m in prepared.modules() if isinstance(m, _GONE)]
    assert all(q.levels == 4 for q in qcfs_modules(prepared).values())
    out = prepared.eval()(torch.randn(2, *spec.size))
    assert out.shape == (2, 10)
    # the input model is untouched (deep copy)
    assert any(isinstance(m, (nn.ReLU, nn.GELU)) for m in model.modules())


def test_transformer_qcfs_sites_follow_mst():
    prepared = prepare(tiny_swin())
    names = set(qcfs_modules(prepared))
    block = "layers.0.blocks.1"
    for site in ("norm1.act", "norm2.act", "attn.q_act", "attn.k_act", "attn.v_act", "attn.attn_act",
                 "attn.out_act", "attn.proj_act", "mlp.act1", "mlp.act2"):
        assert f"{block}.{site}" in names
    assert "layers.1.downsample.reduction.act" in names
    assert isinstance(prepared.layers[0].blocks[1].attn, SpikeWindowAttention)
    assert isinstance(prepared.layers[0].blocks[1].norm1.norm, ChannelBatchNorm)
    # 4 blocks × 10 sites + one after patch merging
    assert len(names) == 41


def test_layernorm_affine_carries_over():
    vit = tiny_vit()
    vit.blocks[0].norm1.weight.data.fill_(1.5)
    prepared = prepare(vit)
    assert isinstance(prepared.blocks[0].attn, SpikeAttention)
    assert torch.all(prepared.blocks[0].norm1.norm.weight == 1.5)


def test_prepared_attention_matches_timm_without_quantization():
    """With QCFS replaced by identity the prepared attention computes timm's attention."""
    vit = tiny_vit().eval()
    attn = vit.blocks[0].attn
    prepared = SpikeAttention.from_timm(attn, levels=8, threshold=1.0)
    for name, m in prepared.named_children():
        if isinstance(m, QCFS):
            setattr(prepared, name, nn.Identity())
    x = torch.randn(3, 17, 24)
    assert torch.allclose(prepared(x), attn(x), atol=1e-5)


def test_swin_window_attention_matches_timm_without_quantization():
    swin = tiny_swin().eval()
    block = swin.layers[0].blocks[1]  # shifted windows: has a mask
    prepared = SpikeWindowAttention.from_timm(block.attn, levels=8, threshold=1.0)
    for name, m in prepared.named_children():
        if isinstance(m, QCFS):
            setattr(prepared, name, nn.Identity())
    x = torch.randn(2 * block.attn_mask.shape[0], block.window_area, 16)
    assert torch.allclose(prepared(x, block.attn_mask), block.attn(x, block.attn_mask), atol=1e-5)


def test_torchvision_residual_blocks_get_one_activation_per_use():
    prepared = prepare(tiny_tv_resnet())
    block = prepared.layer1[0]
    assert len(block.acts) == 3 and len({id(a) for a in block.acts}) == 3


class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.tanh(self.fc(x))


def test_unsupported_layers_are_all_listed():
    model = nn.Sequential(nn.Linear(4, 4), nn.SiLU(), nn.LSTM(4, 4), _Custom(), nn.ReLU(), nn.Sigmoid())
    with pytest.raises(UnsupportedLayersError) as err:
        prepare(model)
    problems = {name: type_name for name, type_name, _ in err.value.problems}
    assert problems == {"1": "SiLU", "2": "LSTM", "3": "_Custom", "5": "Sigmoid"}
    text = str(err.value)
    assert "4 module(s)" in text and "register an architecture rule" in text


def test_unsupported_attention_option_is_reported():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", img_size=28, patch_size=7, embed_dim=24, depth=1, num_heads=2,
                            in_chans=1, num_classes=10, qk_norm=True)
    with pytest.raises(UnsupportedLayersError, match="q_norm"):
        prepare(vit)
