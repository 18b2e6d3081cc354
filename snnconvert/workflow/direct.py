"""Direct training, measured as a converted model is."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import fx

from snnconvert.direct import DirectConfig
from snnconvert.direct.dynamic_timesteps import average_steps, layer_steps
from snnconvert.model_zoo import (build_spiking_classifier, get_recipe)
from snnconvert.checkpoint import Job
from snnconvert.report.records import DirectReport
from snnconvert.runtime.execution import run_steps
from snnconvert.spec import DataSpec, DirectSpec
from snnconvert.workflow.load import eval_loader
from snnconvert.workflow.finetune import train
from snnconvert.workflow.simulate import Measures, simulate_and_summarize, report_header, finish_report


def timestep_summary(snn: fx.GraphModule, config: DirectConfig) -> dict[str, Any]:
    """The time steps a model with dynamic time steps learned: ``T_l`` per layer (and the steps it
    is computed for: fewer where every layer it feeds stopped sooner), ``T_avg`` in all and per group."""
    layers = layer_steps(snn)
    computed = {n.target: k for n, k in run_steps(snn).items() if n.op == "call_module"}
    groups: dict[str, list[int]] = {}
    for layer in layers:
        groups.setdefault(layer.group, []).append(layer.steps)
    return {"max": config.timesteps, "initial": config.initial_timesteps, "mask_loss": list(config.mask_loss),
            "lambda_m": config.lambda_m, "average": average_steps(layers),
            "average_by_group": {g: sum(v) / len(v) for g, v in groups.items()},
            "layers": [{"name": layer.name, "group": layer.group, "steps": layer.steps,
                        "computed": computed.get(layer.name, config.timesteps)} for layer in layers]}


def direct_train(spec: DirectSpec, out: str, device: str, progress: bool) -> DirectReport:
    """Train a spiking model directly as ``spec`` says (surrogate gradients, BPTT over T steps; the
    loss on the mean of the T outputs), then simulate it on the test split with the conversion
    path's simulator and report it the same way (accuracy per step, spikes, spiking metrics,
    energy), in ``out``. Resumable."""
    start = time.perf_counter()
    config, train_config, data, costs = spec.direct, spec.train, spec.data, spec.costs
    recipe = get_recipe(spec.model)
    out_dir = Path(out)
    torch.manual_seed(train_config.seed)
    model = build_spiking_classifier(recipe, config)
    record = train(model, recipe, config, DataSpec(data.name, data.limit), train_config, device,
                   Job(progress, out_dir / "direct.pt"))
    test = eval_loader(recipe, data.name, data.batch_size, data.limit)
    progress_file = out_dir / "simulation_direct.progress.pt"
    snn = model.for_inference(recipe.example_batch().to(device))
    sim = simulate_and_summarize(snn, recipe, test, config.timesteps, device, Job(progress, progress_file),
                                 Measures(costs=costs))
    report = DirectReport(**report_header(recipe, str(out_dir / "direct.pt"), data.name, None, config.timesteps,
                                          config.neuron),
                          method="direct", direct=config, training=record, ann_accuracy={}, energy_costs_pj=costs,
                          simulations={"direct": sim},
                          dynamic_timesteps=timestep_summary(snn, config) if config.dynamic_timesteps else None,
                          parameters=sum(p.numel() for p in model.parameters()), spec=spec,
                          seconds=round(time.perf_counter() - start, 1))
    finish_report(report, out_dir, [progress_file])
    return report
