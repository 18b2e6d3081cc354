"""Data that does not fit the model is refused; the model can be built for the data; weights saved
under other names load by order; an ImageFolder of some of the model's classes keeps their labels."""
import numpy as np
import pytest
import timm
import torch
from click.testing import CliRunner

from snnconvert import workflow
from snnconvert.cli import main
from snnconvert.data import load_dataset
from snnconvert.data.fit import check_fit
from snnconvert.errors import CheckpointError, DataError
from snnconvert.model_zoo import get_recipe, load_model
from snnconvert.model_zoo.build import remap_by_order


def _folder(root, classes, size=(40, 40)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / split / name / "0.png")


def test_small_images_and_other_class_counts_are_refused_with_the_fix():
    swin_t = get_recipe("swin_t")  # 3×224×224, 1000 classes
    data = load_dataset("embedded", "test", swin_t.input_spec)
    with pytest.raises(DataError, match=r"28×28 images, swin_t takes 224×224.*--input-size"):
        check_fit(data, swin_t.input_spec, "embedded", "swin_t")
    adapted = swin_t.adapted(num_classes=None, input_size=(1, 32, 32))
    with pytest.raises(DataError, match=r"10 classes, swin_t predicts 1000: pass --num-classes 10"):
        check_fit(load_dataset("embedded", "test", adapted.input_spec), adapted.input_spec, "embedded", "swin_t")
    fits = swin_t.adapted(num_classes=10, input_size=(1, 32, 32))
    check_fit(load_dataset("embedded", "test", fits.input_spec), fits.input_spec, "embedded", "swin_t")
    nano = get_recipe("swin_nano")  # 28 px padded to 32: fits
    check_fit(load_dataset("embedded", "test", nano.input_spec), nano.input_spec, "embedded", "swin_nano")


def test_a_partial_image_folder_keeps_the_models_labels(tmp_path):
    _folder(tmp_path / "imagenet", ["n01443537", "n01440764"])  # two ImageNet synsets, as folders
    spec = get_recipe("resnet18").input_spec
    ds = load_dataset(str(tmp_path / "imagenet"), "test", spec)
    assert sorted(ds.targets) == [0, 1] and ds.label_space == "model"  # tench is 0, goldfish 1 in ImageNet
    assert ds.targets[ds.classes.index("n01443537")] == 1
    check_fit(ds, spec, "imagenet", "resnet18")  # 2 folders, labels in the model's 1000 classes

    _folder(tmp_path / "pets", ["dog", "cat"])
    with pytest.raises(DataError, match="2 classes, resnet18 predicts 1000.*--class-map"):
        check_fit(load_dataset(str(tmp_path / "pets"), "test", spec), spec, "pets", "resnet18")
    mapped = get_recipe("resnet18").adapted(classes=("bird", "cat", "dog", "fish")).input_spec
    ds = load_dataset(str(tmp_path / "pets"), "test", mapped)
    assert {ds.classes[i]: t for i, t in enumerate(sorted(set(ds.targets)))} == {"cat": 1, "dog": 2}
    with pytest.raises(DataError, match="not among the model's 1 classes: dog"):
        load_dataset(str(tmp_path / "pets"), "test", get_recipe("resnet18").adapted(classes=("cat",)).input_spec)


def test_num_classes_builds_a_new_head_and_reports_it(tmp_path):
    source = timm.create_model("resnet18", layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), in_chans=1,
                               num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    recipe = get_recipe("resnet_nano")
    with pytest.raises(CheckpointError, match=r"fc.weight \(1000, 128\) vs \(10, 128\).*--num-classes"):
        load_model(recipe, tmp_path / "weights.pth")
    loaded = load_model(recipe, tmp_path / "weights.pth", adapt={"num_classes": 10})
    assert loaded.metadata["loading"]["reinitialized"] == ["fc.weight", "fc.bias"]
    assert torch.equal(loaded.model.conv1.weight, source.conv1.weight)


def test_weights_saved_under_other_names_load_by_order(tmp_path):
    model = timm.create_model("resnet18", layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), in_chans=1,
                              num_classes=10)
    foreign = {f"net.layer{i}": v for i, (k, v) in enumerate(model.state_dict().items())
               if not k.endswith("num_batches_tracked")}
    torch.save(foreign, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="--remap-keys order"):
        load_model(get_recipe("resnet_nano"), tmp_path / "foreign.pth")
    loaded = load_model(get_recipe("resnet_nano"), tmp_path / "foreign.pth", remap="order")
    assert loaded.metadata["loading"]["remapped"][0] == "net.layer0 → conv1.weight"
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(), model.state_dict().values()))
    swapped = dict(list(foreign.items())[::-1])
    with pytest.raises(CheckpointError, match="differ in shape"):
        remap_by_order(swapped, model)
    with pytest.raises(CheckpointError, match="holds 3 tensors"):
        remap_by_order(dict(list(foreign.items())[:3]), model)


def test_cli_adapts_and_refuses(tmp_path):
    runner = CliRunner()
    refused = runner.invoke(main, ["prepare", "resnet18", "--no-pretrained", "--out", str(tmp_path / "p.pt")])
    assert refused.exit_code == 0  # preparing needs no data
    r = runner.invoke(main, ["run", "resnet18", "--no-pretrained", "--epochs", "0", "-T", "2", "--limit", "8",
                             "--out", str(tmp_path / "r")], standalone_mode=False)
    assert isinstance(r.exception, DataError) and "--input-size" in str(r.exception)
    r = runner.invoke(main, ["run", "resnet18", "--no-pretrained", "--epochs", "0", "-T", "2", "--limit", "8",
                             "--calib-samples", "8", "--num-classes", "10", "--input-size", "1,32,32",
                             "--out", str(tmp_path / "r"), "--quiet"])
    assert r.exit_code == 0, r.output
    bad = runner.invoke(main, ["run", "resnet18", "--input-size", "1,32", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "C,H,W" in bad.output
    loaded = workflow.load("resnet18", None, pretrained=False, adapt={"num_classes": 10, "input_size": (1, 32, 32)})
    assert loaded.model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
