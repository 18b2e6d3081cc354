"""Typed records: what the workflow stages return is what their reports store, and specs read from
files are checked as the command line's options are."""
import json
from dataclasses import dataclass

import pytest

from snnconvert import workflow
from snnconvert.errors import ArgumentError
from snnconvert.record import Record, optional
from snnconvert.report import console
from snnconvert.report.records import RunReport, Simulation
from snnconvert.spec import DataSpec, DirectSpec, ModelSource, RunSpec


@dataclass(frozen=True)
class _Inner:
    values: tuple[int, ...]


@dataclass(frozen=True)
class _Outer(Record):
    name: str
    inner: _Inner
    table: dict[str, _Inner]
    note: str | None = optional()
    kept: str | None = None


def test_a_record_writes_its_fields_in_order_and_leaves_out_unset_optional_ones():
    record = _Outer("a", _Inner((1, 2)), {"x": _Inner((3,))})
    assert record.to_dict() == {"name": "a", "inner": {"values": [1, 2]}, "table": {"x": {"values": [3]}},
                                "kept": None}  # an optional field is left out while None, a plain one is not
    assert list(_Outer("b", _Inner(()), {}, note="n").to_dict()) == ["name", "inner", "table", "note", "kept"]


def test_the_run_stage_returns_the_typed_report_it_writes(tmp_path):
    spec = RunSpec(ModelSource("resnet_nano"), DataSpec(limit=8, batch_size=8), timesteps=2)
    report = workflow.run(spec, str(tmp_path), "cpu", progress=False)
    assert isinstance(report, RunReport) and isinstance(report.simulations["compensated"], Simulation)
    assert report.spec.timesteps == 2 and report.spec.epochs == 0  # resolved as the run went
    written = json.loads((tmp_path / "report.json").read_text())
    assert written == report.to_dict()
    sim = written["simulations"]["compensated"]
    assert "notes" not in sim and "early_exit" not in sim and sim["float_operations"] is not None
    lines = console.run_lines(report, str(tmp_path))
    assert any(line.startswith("  SNN compensated") and "T=2" in line for line in lines)


def test_a_spec_from_a_file_is_checked_like_the_options():
    spec = {"model": "spikformer_nano", "direct": {"timesteps": 4}, "train": {"epochs": 1, "distill_alpha": 0.5}}
    with pytest.raises(ArgumentError, match="no teacher to distill from.*alpha"):
        DirectSpec.from_dict(spec)
    spec["train"]["distill_alpha"] = 0.0
    assert DirectSpec.from_dict(spec).train.distill_alpha == 0.0


def test_a_spec_resolves_the_event_driven_route_as_the_options_do(tmp_path):
    from snnconvert.cli import main
    from click.testing import CliRunner

    from snnconvert.convert import NeuronConfig
    from snnconvert.runtime import SimulationOptions

    spec = RunSpec(ModelSource("vit_nano"), DataSpec(limit=8, batch_size=8), timesteps=2,
                   neuron=NeuronConfig("signed-if", coding="count"), simulation=SimulationOptions(event_driven=True))
    report = workflow.run(spec, str(tmp_path / "spec"), "cpu", progress=False)
    done = CliRunner().invoke(main, ["vit_nano", "-T", "2", "--limit", "8", "--batch-size", "8", "--coding", "count",
                                     "--neuron", "signed-if", "--event-driven", "--quiet", "--out",
                                     str(tmp_path / "options")])
    assert done.exit_code == 0, done.output
    options = json.loads((tmp_path / "options" / "report.json").read_text())
    assert report.spec.prepare.spike_probabilities is None  # asked for where the model has them
    assert report.preparation["changes"][0].startswith("changes QCFS on attention")  # vit_nano has them
    assert report.to_dict()["spec"]["prepare"] == options["spec"]["prepare"]
    assert report.to_dict()["preparation"] == options["preparation"]


def _spec_of_options(command: str, args: list[str], build):
    """The spec ``build`` makes of ``command``'s options ``args`` (parsed, not run)."""
    from snnconvert.cli import main

    with main.commands[command].make_context(command, args) as context:
        given = dict(context.params)
        return build(given.pop("model"), given)


def test_a_spec_file_gets_the_recipes_settings_under_its_own_as_the_options_do(tmp_path):
    from snnconvert.cli import options
    from snnconvert.spec import SweepSpec

    direct = _spec_of_options("direct-train", ["spiking_vit_nano", "--neuron", "lif", "--epochs", "2", "--lr", "0.01",
                                               "--out", str(tmp_path / "d")], options.direct_spec)
    written = DirectSpec.from_dict({"model": "spiking_vit_nano", "direct": {"neuron": "lif"},
                                    "train": {"epochs": 2, "lr": 0.01}})
    assert (written.direct, written.train) == (direct.direct, direct.train)
    assert (written.direct.encoding, written.direct.tau) == ("poisson", 2.5)  # the recipe's, not DirectConfig's
    assert written.train.batch_size == 128
    sweep = _spec_of_options("mask-sweep", ["vit_nano", "--finetune-epochs", "1", "--alpha", "0.3",
                                            "--out", str(tmp_path / "s")], options.sweep_spec)
    written = SweepSpec.from_dict({"model": {"name": "vit_nano"}, "finetune": {"epochs": 1, "distill_alpha": 0.3}})
    assert written.finetune == sweep.finetune and written.finetune.lr == 0.002  # vit_nano's fine-tuning rate
    assert SweepSpec.from_dict(written.to_dict()) == written  # a stored spec reads back as it was
