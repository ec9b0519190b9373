"""Training throughput of the semi-supervised sandwich step, and where the step's time goes.

Usage: python bench/train_throughput.py [--steps 30] [--batch 32] [--mu 1] [--loss full]
                                        [--teacher-warmup 0.2] [--set key=value]

Lite0 space on digits at 32 px: per step, B labelled + mu*B unlabelled images; the time of a step
is split into data (batch indices, weak and strong views, normalisation), forward+backward of the
sandwich (teacher + subnets), and the optimizer step. Prints a Markdown table.

``--teacher-warmup F`` also times the teacher's warm-up step (the maxnet alone, ``train.teacher_warmup``)
interleaved with the sandwich step, one of each in turn on the same batches, so that both see the
same machine load, and prints what a run whose first F of the steps are warm-up costs against a
plain sandwich run of equal steps: ``F * warm-up/sandwich + (1 - F)``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from matchnas.data import BatchStream
from matchnas.experiment import Experiment, load_experiment
from matchnas.run import read_experiment
from matchnas.space import SubnetConfig
from matchnas.train.estimate import teacher_steps
from matchnas.train.loop import build_optimizer, build_supernet, make_batch, prepare_data
from matchnas.train.sampler import sandwich
from matchnas.train.step import LossSettings, train_step


def training_setup(experiment: Experiment):
    """What a training step needs, built as the training loop builds it: ``(data, supernet,
    optimizer, schedule, loss settings, labelled stream, unlabelled stream or None)``."""
    t = experiment.train
    with tempfile.TemporaryDirectory() as run_dir:
        data = prepare_data(experiment, Path(run_dir))
    supernet = build_supernet(experiment, data.num_classes).to(memory_format=torch.channels_last).train()
    optimizer, schedule = build_optimizer(supernet, experiment)
    labelled = BatchStream(len(data.sets.labeled), t.batch_size, t.seed, 0)
    unlabelled = None if t.loss == "sup" else BatchStream(len(data.sets.unlabeled), t.unlabeled_ratio * t.batch_size, t.seed, 1)
    return data, supernet, optimizer, schedule, LossSettings.from_train_config(t), labelled, unlabelled


def interleaved_step_seconds(experiment: Experiment, kinds: dict[str, Callable[[int], list[SubnetConfig]]],
                             rounds: int = 20) -> dict[str, float]:
    """Median seconds of a whole training step (batch, forward+backward, optimizer) of each kind:
    ``kinds[name](step)`` gives the subnets a step of that kind trains (the maxnet alone, the
    sandwich, one fixed subnet). One step of each kind in turn, on the same batch, so that every
    kind sees the same machine load; the first round is left out (allocation)."""
    data, supernet, optimizer, _, settings, labelled, unlabelled = training_setup(experiment)
    seconds: dict[str, list[float]] = {name: [] for name in kinds}
    for step in range(rounds + 1):
        for name, configs_of in kinds.items():
            began = time.perf_counter()
            batch = make_batch(data, experiment, step, labelled, unlabelled)
            optimizer.zero_grad(set_to_none=True)
            train_step(supernet, configs_of(step), batch, settings)
            optimizer.step()
            if step:
                seconds[name].append(time.perf_counter() - began)
    return {name: statistics.median(times) for name, times in seconds.items()}


def run_seconds(experiment: Experiment, space, singles: dict[str, SubnetConfig], n_randoms: tuple[int, ...] = ()) -> dict:
    """Seconds of a whole supernet run of ``experiment`` (in ``space``: its teacher-only steps at
    the warm-up step's median, the rest at the sandwich step's) and of a whole single-model run of
    each of ``singles``, from :func:`interleaved_step_seconds`; ``median_step`` holds the medians.
    ``n_randoms``: also a supernet run whose sandwich trains N random subnets (``supernet-N``,
    timed as ``sandwich-N``), for each N other than the experiment's ``train.n_random``."""
    t = experiment.train
    other_sizes = [n for n in n_randoms if n != t.n_random]
    step = interleaved_step_seconds(experiment, {
        "sandwich": lambda s: sandwich(space, t.seed, s, t.n_random),
        "warmup": lambda s: [space.max()],
        **{name: (lambda s, c=config: [c]) for name, config in singles.items()},
        **{f"sandwich-{n}": (lambda s, n=n: sandwich(space, t.seed, s, n)) for n in other_sizes}})
    warmup = teacher_steps(experiment, t.steps)

    def supernet(sandwich_kind: str) -> float:
        return warmup * step["warmup"] + (t.steps - warmup) * step[sandwich_kind]

    return {"supernet": supernet("sandwich"), **{f"supernet-{n}": supernet(f"sandwich-{n}") for n in other_sizes},
            **{name: t.steps * step[name] for name in singles}, "median_step": step}


def folder_experiment(run_dir: Path, folder: Path) -> Experiment:
    """The experiment of the run in ``run_dir``, reading its data from ``folder``."""
    experiment = read_experiment(run_dir)
    return replace(experiment, data=replace(experiment.data, source=str(folder)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--mu", type=int, default=1)
    parser.add_argument("--loss", default="full")
    parser.add_argument("--teacher-warmup", type=float, help="also time warm-up steps against sandwich steps, interleaved")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an experiment override")
    args = parser.parse_args()
    experiment = load_experiment(None, [f"train.batch_size={args.batch}", f"train.unlabeled_ratio={args.mu}",
                                        f"train.loss={args.loss}", *args.set])
    t = experiment.train
    data, supernet, optimizer, schedule, settings, labelled, unlabelled = training_setup(experiment)
    parts = {"data": [], "forward+backward": [], "optimizer": [], "step": []}
    warmup_steps = []  # seconds of each warm-up step (the sandwich steps are parts["step"])
    for step in range(args.steps + 3):
        t0 = time.perf_counter()
        configs = sandwich(supernet.space, t.seed, step, t.n_random)
        if args.teacher_warmup is not None and step % 2:
            configs = configs[:1]  # the loop's warm-up step: the maxnet alone
        batch = make_batch(data, experiment, step, labelled, unlabelled)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        train_step(supernet, configs, batch, settings)
        t2 = time.perf_counter()
        optimizer.step()
        schedule.step()
        t3 = time.perf_counter()
        if step >= 3:  # the first steps allocate and tune: left out
            if len(configs) == 1:
                warmup_steps.append(t3 - t0)
            else:
                for key, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                    parts[key].append(seconds)
    total = sum(parts["step"])
    images = args.batch * (1 + (args.mu if unlabelled else 0))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {experiment.model.space or experiment.model.backbone} space, "
          f"{experiment.data.image_size} px, {args.batch} labelled + {args.mu * args.batch if unlabelled else 0} unlabelled "
          f"a step, loss {args.loss}, {2 + t.n_random} subnets a sandwich step, {len(parts['step'])} sandwich steps")
    print("| part | median ms | share of step time |")
    print("|---|---:|---:|")
    for key in ("data", "forward+backward", "optimizer", "step"):
        print(f"| {key} | {1e3 * statistics.median(parts[key]):.1f} | {100 * sum(parts[key]) / total:.1f}% |")
    outside = 100 * (sum(parts["data"]) + sum(parts["optimizer"])) / total
    print(f"\nimages/s (labelled + unlabelled): {images * len(parts['step']) / total:.1f}; outside forward+backward: {outside:.1f}%")
    if args.teacher_warmup is not None:
        ratio = statistics.median(warmup_steps) / statistics.median(parts["step"])
        f = args.teacher_warmup
        print(f"\nwarm-up step / sandwich step (medians of {len(warmup_steps)} and {len(parts['step'])}, "
              f"interleaved): {ratio:.2f}; a run with teacher_warmup={f} costs {f * ratio + 1 - f:.2f}x a plain "
              "sandwich run of equal steps")


if __name__ == "__main__":
    main()
