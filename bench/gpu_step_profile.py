"""Where a training step's time goes on a GPU: the suite's step (Fashion-MNIST 64 px, the 32-64 px
Lite0 space) timed under each precision, memory format and cuDNN autotuning, then profiled.

Usage: python bench/gpu_step_profile.py [--device cuda] [--steps 15] [--set key=value ...]

Per variant (bf16 autocast or fp32; channels-last or contiguous; cudnn.benchmark off or on),
the median seconds of a warm-up step (the maxnet alone) and of a sandwich step (4 subnets), each
with the batch, forward+backward and the optimizer, synchronised. Then the 15 most expensive
operators of the training loop's own settings (:mod:`matchnas.devices`: fp32; on a GPU contiguous
and autotuned) by device time, and the host's time against the device's: a step that is
launch-bound shows a device time far below the wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import time

import torch
from suite import PROTOCOL
from train_throughput import training_setup

from matchnas import devices
from matchnas.experiment import load_experiment
from matchnas.train.distributed import Placement, pick_device
from matchnas.train.loop import make_batch
from matchnas.train.sampler import sandwich
from matchnas.train.step import train_step

SPACE = ["data.image_size=64", "model.space=spaces/efficientnet-lite0-32to64.yaml"]


def step_seconds(setup, experiment, placement, bf16: bool, channels_last: bool, steps: int) -> dict[str, float]:
    data, supernet, optimizer, _, settings, labelled, unlabelled = setup
    memory = torch.channels_last if channels_last else torch.contiguous_format
    supernet.to(memory_format=memory)
    autocast = torch.autocast(placement.device.type, dtype=torch.bfloat16, enabled=bf16)
    times: dict[str, list[float]] = {"warm-up step": [], "sandwich step": []}
    for step in range(steps + 2):
        for kind in times:
            configs = sandwich(supernet.space, 0, step, experiment.train.n_random)
            configs = configs[:1] if kind == "warm-up step" else configs
            sync(placement)
            began = time.perf_counter()
            batch = make_batch(data, experiment, step, labelled, unlabelled, placement)
            batch = dataclasses.replace(batch, **{k: v.contiguous(memory_format=memory) for k, v in vars(batch).items()
                                                  if v is not None and v.dim() == 4})
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                train_step(supernet, configs, batch, settings)
            optimizer.step()
            sync(placement)
            if step >= 2:  # allocation and autotuning left out
                times[kind].append(time.perf_counter() - began)
    return {kind: statistics.median(t) for kind, t in times.items()}


def sync(placement: Placement) -> None:
    if placement.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    experiment = load_experiment(None, [*PROTOCOL, *SPACE, "train.steps=2000", f"train.device={args.device}", *args.set])
    placement = Placement(device=pick_device(args.device))
    setup = training_setup(experiment)
    setup[1].to(placement.device)
    name = torch.cuda.get_device_name() if placement.device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}, {experiment.data.image_size} px, batch 32 + 32 (x, weak, strong: 96 images)")
    print("| precision | memory format | cudnn.benchmark | warm-up step ms | sandwich step ms |")
    print("|---|---|---|---:|---:|")
    for bf16, channels_last, benchmark in itertools.product((True, False), (True, False), (False, True)):
        torch.backends.cudnn.benchmark = benchmark
        ms = step_seconds(setup, experiment, placement, bf16, channels_last, args.steps)
        print(f"| {'bf16' if bf16 else 'fp32'} | {'channels-last' if channels_last else 'contiguous'} | {benchmark} | "
              f"{1e3 * ms['warm-up step']:.1f} | {1e3 * ms['sandwich step']:.1f} |", flush=True)

    # the training loop's own settings (matchnas.devices): fp32, contiguous on a GPU, autotuned
    torch.backends.cudnn.benchmark = placement.device.type == "cuda"
    channels_last = devices.memory_format(placement.device) == torch.channels_last
    activities = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if placement.device.type == "cuda" else [])
    step_seconds(setup, experiment, placement, False, channels_last, 1)
    with torch.profiler.profile(activities=activities) as prof:
        step_seconds(setup, experiment, placement, False, channels_last, 1)
    sort = "self_cuda_time_total" if placement.device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=60))


if __name__ == "__main__":
    main()
