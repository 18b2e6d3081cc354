"""The shipped models convert to exactly what snnconvert 0.1's block-rule converter computed.

``data/shipped_reference.pt`` holds that converter's outputs (commit 7e01c56, one CPU thread) on the
first 32 embedded test images: QCFS logits and the SNN's summed outputs at several t, for the IF
neuron in both attention modes and the signed burst neuron. The graph converter, reading the
checkpoints migrated to its layout, gives the same values (and the same predictions at every t).
"""
from pathlib import Path

import pytest
import torch

from snnconvert.convert import convert
from snnconvert.model_zoo import get_recipe, load_model
from snnconvert.runtime import reset_states

from conftest import images

REFERENCE = torch.load(Path(__file__).parent / "data" / "shipped_reference.pt", weights_only=True)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the reference was computed
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_shipped_model_converts_as_before(name, one_thread):
    loaded = load_model(get_recipe(name))
    model = loaded.model.eval()
    x, _ = images(loaded.recipe.input_spec, 32)
    reference = REFERENCE[name]
    with torch.no_grad():
        assert torch.allclose(model(x), reference["qcfs_logits"], rtol=0, atol=1e-5)
    for key, sums in reference.items():
        if key == "qcfs_logits":
            continue
        mode, neuron = key.split("/")
        snn = convert(model, mode, neuron)
        reset_states(snn)
        total = 0
        with torch.no_grad():
            for t in range(1, max(sums) + 1):
                total = total + snn(x)
                if t in sums:
                    assert torch.equal(total.argmax(-1), sums[t].argmax(-1)), (key, t)
                    assert torch.allclose(total, sums[t], rtol=0, atol=1e-4 * t), (key, t)
