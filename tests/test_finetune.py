"""Distillation fine-tuning: the loss, the teacher's pull, the MST MLP BatchNorm, the pipeline and `zoo build`."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from snnconvert import workflow
from snnconvert.checkpoint import Job
from snnconvert.spec import DataSpec
from snnconvert.calibrate import CalibrationConfig
from snnconvert.convert import convert
from snnconvert.prepare import MaskConfig, PrepareConfig, qcfs_modules, spike_masks
from snnconvert.prepare.norm import ChannelBatchNorm
from snnconvert.model_zoo import build_ann, get_recipe
from snnconvert.model_zoo.build import LoadedModel
from snnconvert.model_zoo.registry import BuildPlan, Recipe, register_recipe
from snnconvert.errors import SnnConvertError
from snnconvert.runtime import evaluate, reseed_masks
from snnconvert.train import DistillationLoss, Objective, TrainConfig, fit

from conftest import SPEC_32, calibrated, images, tiny_swin


def test_distillation_loss_is_the_stated_formula():
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    alpha, tau = 0.3, 2.5
    p_t = F.softmax(t / tau, -1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / tau, -1))).sum(-1).mean()
    expected = (1 - alpha) * F.cross_entropy(s, y) + alpha * tau ** 2 * kl
    assert torch.allclose(DistillationLoss(alpha, tau)(s, y, t), expected, atol=1e-6)
    assert torch.allclose(DistillationLoss(0.0)(s, y), F.cross_entropy(s, y))
    assert DistillationLoss(1.0, tau)(t, y, t).abs() < 1e-6  # a student equal to its teacher: nothing to learn


def test_distillation_options_are_checked():
    with pytest.raises(ValueError, match="alpha"):
        TrainConfig(distill_alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        TrainConfig(distill_alpha=0.5, temperature=0)
    with pytest.raises(ValueError, match="teacher"):
        fit(nn.Linear(4, 3), TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long)), TrainConfig(epochs=1, distill_alpha=0.5))


def test_train_samples_takes_a_seeded_subset():
    seen = []

    class Counting(TensorDataset):
        def __getitem__(self, i):
            seen.append(i)
            return super().__getitem__(i)

    data = Counting(torch.randn(100, 4), torch.zeros(100, dtype=torch.long))
    for _ in range(2):
        fit(nn.Linear(4, 3), data, TrainConfig(epochs=1, batch_size=5, train_samples=10, seed=3))
    assert len(seen) == 20 and sorted(seen[:10]) == sorted(seen[10:]) and len(set(seen)) == 10


def test_distillation_pulls_the_student_to_the_teacher():
    """On random labels, a student distilled with α = 1 learns the teacher's function; with α = 0 it does not."""
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    data = TensorDataset(x, torch.randint(0, 5, (512,)))  # labels unrelated to the teacher
    teacher = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5))

    def agreement(alpha):
        torch.manual_seed(1)
        student = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5))
        fit(student, data, TrainConfig(epochs=15, batch_size=64, lr=1e-2, label_smoothing=0, distill_alpha=alpha,
                                       temperature=1.0), objective=Objective(teacher=teacher))
        with torch.no_grad():
            return (student(x).argmax(-1) == teacher(x).argmax(-1)).float().mean().item()

    distilled, plain = agreement(1.0), agreement(0.0)
    assert distilled > 0.75 and distilled > plain + 0.3, (distilled, plain)


def _calibrated(model, mlp_batchnorm):
    x, _ = images(SPEC_32, 64, "train")
    return calibrated(model, x, PrepareConfig(mlp_batchnorm=mlp_batchnorm), CalibrationConfig(num_samples=64))


def test_mlp_batchnorm_starts_as_identity_and_folds_away():
    model = tiny_swin().eval()
    (plain, _), (with_bn, report) = _calibrated(model, False), _calibrated(model, True)
    added = report.new_batchnorms(identity=True)
    assert sorted(added) == sorted(f"layers.{i}.blocks.{j}.mlp.{fc}_bn" for i in (0, 1) for j in (0, 1)
                                   for fc in ("fc1", "fc2"))
    assert all(isinstance(with_bn.get_submodule(name), ChannelBatchNorm) for name in added)
    x, _ = images(SPEC_32, 32)
    with torch.no_grad():
        assert torch.allclose(plain(x), with_bn(x), atol=1e-4)
        snn = convert(with_bn)
        assert not any(isinstance(m, ChannelBatchNorm) for n, m in snn.named_modules() if ".mlp." in n)


def test_finetune_starts_from_the_teacher_and_records_it(tmp_path):
    recipe = get_recipe("swin_nano")
    torch.manual_seed(0)
    ann = LoadedModel(build_ann(recipe), recipe, "ann", None, "test ANN", {})
    config = TrainConfig(epochs=1, batch_size=100, lr=1e-3, distill_alpha=0.5, temperature=2.0)
    model, prep, record = workflow.finetune(ann, DataSpec("embedded", 200), config, CalibrationConfig(num_samples=64),
                                            "cpu", Job(checkpoint=tmp_path / "ft.pt"))
    assert record.distilled and record.started_from == "test ANN" and prep.levels == recipe.levels
    assert record.teacher_accuracy is not None and len(record.history) == 1
    # the student's weights came from the teacher: patch embedding unchanged up to training
    assert torch.allclose(model.get_submodule("patch_embed.proj").weight, ann.model.patch_embed.proj.weight, atol=0.05)
    on_disk = json.loads((tmp_path / "ft.json").read_text())
    assert on_disk["config"]["distill_alpha"] == 0.5 and on_disk["resumed_from"] is None
    assert workflow.load("swin_nano", str(tmp_path / "ft.pt")).stage == "prepared"


def test_spiking_probabilities_are_fine_tuned_against_the_prepared_model_as_it_came(tmp_path):
    loaded = workflow.load("vit_nano", None)  # the shipped prepared model: real-valued probabilities
    config = TrainConfig(epochs=1, batch_size=100, lr=5e-4, warmup_epochs=0, distill_alpha=0.5, train_samples=200)
    torch.manual_seed(0)
    student, prep, record = workflow.finetune(loaded, DataSpec("embedded", 100), config, CalibrationConfig(num_samples=32),
                                              "cpu", Job(checkpoint=tmp_path / "p.pt"),
                                              PrepareConfig(spike_probabilities=True))
    assert record.teacher == "prepared model without QCFS on attention probabilities" and record.distilled
    assert prep.spike_probabilities and record.preparation["changes"][0].startswith("changes QCFS on attention")
    sites = [n for n, q in qcfs_modules(student).items() if q.role == "probabilities"]
    assert len(sites) == 4 and not any(q.role == "probabilities" for q in qcfs_modules(loaded.model).values())
    assert not torch.equal(student.head.weight, loaded.model.head.weight)  # the student trained
    assert workflow.load("vit_nano", str(tmp_path / "p.pt")).prepare_config.spike_probabilities


def test_masked_finetune_distills_from_the_unmasked_model(tmp_path):
    loaded = workflow.load("vit_nano", None)  # the shipped prepared model
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    masks = MaskConfig({"mlp": 0.5}, seed=3)
    config = TrainConfig(epochs=1, batch_size=100, lr=5e-4, warmup_epochs=0, distill_alpha=0.5)
    torch.manual_seed(0)
    student, prep, record = workflow.finetune(loaded, DataSpec("embedded", 200), config, CalibrationConfig(), "cpu",
                                              Job(checkpoint=tmp_path / "m.pt"), masks=masks)
    assert record.teacher == "unmasked prepared model" and record.distilled and prep.masks == masks
    assert record.teacher_accuracy > record.accuracy_before_training  # masking costs accuracy at first
    assert len(spike_masks(student)) == 4 and not spike_masks(loaded.model)
    assert all(torch.equal(before[k], v) for k, v in loaded.model.state_dict().items())  # the teacher is untouched
    assert not torch.equal(student.head.weight, loaded.model.head.weight)  # the student trained
    reloaded = workflow.load("vit_nano", str(tmp_path / "m.pt"))
    assert reloaded.prepare_config.masks == masks and len(spike_masks(reloaded.model)) == 4
    x, _ = images(loaded.recipe.input_spec, 16)
    reseed_masks(reloaded.model), reseed_masks(student)
    with torch.no_grad():
        assert torch.equal(reloaded.model.eval()(x), student.eval()(x))  # same weights, same mask seeds
    with pytest.raises(SnnConvertError, match="masked already"):
        workflow.finetune(reloaded, DataSpec("embedded"), config, CalibrationConfig(), "cpu",
                          Job(checkpoint=tmp_path / "n.pt"), masks=masks)
    with pytest.raises(SnnConvertError, match="needs a teacher"):
        workflow.finetune(loaded, DataSpec("embedded"), config, CalibrationConfig(), "cpu",
                          Job(checkpoint=tmp_path / "n.pt"))


def test_zoo_build_trains_ann_then_distills(tmp_path):
    base = get_recipe("resnet_nano")
    recipe = register_recipe(base.with_updates(
        name="test_build_nano", checkpoint="test_build_nano.pt",
        build=BuildPlan(data="embedded", ann={"epochs": 1, "batch_size": 100},
                        qcfs={"epochs": 1, "batch_size": 100, "lr": 5e-4, "distill_alpha": 0.5})))
    record = workflow.build(recipe.name, tmp_path, None, "cpu", False)
    assert set(record["stages"]) == {"ann", "qcfs"} and record["distilled"]
    assert (tmp_path / "test_build_nano_ann.pt").exists() and (tmp_path / "test_build_nano.json").exists()
    loaded = workflow.load(recipe.name, str(tmp_path / "test_build_nano.pt"))
    assert loaded.stage == "prepared"
    test = workflow.eval_loader(recipe, "embedded", 250, None)
    assert evaluate(loaded.model, test) == record["history"][-1]["val_accuracy"]  # the saved model is the trained one
    again = workflow.build(recipe.name, tmp_path, None, "cpu", False)  # finished stages are not redone
    assert again["stages"]["ann"]["resumed_from"] == {"epoch": 1, "batch": 0}
    assert again["stages"]["qcfs"]["resumed_from"] == {"epoch": 1, "batch": 0}
    # the record keeps the training time on record, not the few milliseconds of the finished resume
    assert again["stages"]["qcfs"]["seconds"] == pytest.approx(record["stages"]["qcfs"]["seconds"], abs=0.3)
    assert record["stages"]["qcfs"]["seconds"] > 0.5


def test_recipes_without_a_build_plan_say_what_to_do(tmp_path):
    with pytest.raises(SnnConvertError, match="finetune swin_t"):
        workflow.build("swin_t", tmp_path, None, "cpu", False)


def test_recipe_round_trips_with_its_build_plan():
    r = get_recipe("resnet_nano")
    stored = json.loads(json.dumps(r.to_dict()))  # as a checkpoint holds it
    back = Recipe.from_dict(stored)
    assert back.build == r.build and json.loads(json.dumps(back.to_dict())) == stored
    assert r.finetune_settings["distill_alpha"] == 0.5
