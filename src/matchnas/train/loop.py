"""The training run, top to bottom: data, supernet, optimizer, the sandwich loop, checkpoints,
evaluation. ``train(experiment, run_dir)`` starts a run; ``resume(run_dir)`` continues one.

Run directory:
  experiment.yaml        the resolved experiment (defaults + file + overrides)
  split.json             which training images keep their labels
  metrics.jsonl          one JSON object per step (losses, mask rate, pseudo-label accuracy, images/s)
  checkpoint-latest.pt   written atomically every ``checkpoint_every`` steps
  checkpoint-final.pt    written at the end
  selection_index.json   TOFA's index I(a) (also inside each checkpoint)
  eval.json              top-1 of the evaluated subnets after BN recalibration
  pool.json              the narrowed pool, when ``narrow.proxy`` is set
  fewshot.json           the few-shot split (edges, groups, gradient-matching scores), when
                         ``split.method`` is set; also inside each later checkpoint
  plan.json              the training plan and its time estimate, when the run was planned
  timing.json            the run's measured seconds next to that estimate
  .matchnas.lock         while a process writes the run (its pid, host, command): one writer at a time
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from matchnas import devices
from matchnas.checkpoint import FINAL, LATEST, check_belongs, load_checkpoint, save_checkpoint
from matchnas.convert import from_pretrained
from matchnas.data.survey import survey
from matchnas.defaults import resolve
from matchnas.data import BatchStream, Normalisation, save_split
from matchnas.errors import Interrupted, MatchnasError
from matchnas.experiment import Experiment
from matchnas.io import as_path, atomic_write_json, atomic_write_text, remove_leftovers, to_json
from matchnas.nn import Supernet
from matchnas.pool import POOL_FILE, load_pool, save_pool
from matchnas.run import RunData, held_out, prepare_data, read_experiment, rebuild_supernet, top1
from matchnas.selection_index import SelectionIndex
from matchnas.space import SubnetConfig
from matchnas.train.batches import batch_streams, make_batch
from matchnas.train.claim import claim_run
from matchnas.train.distributed import (Placement, any_rank, average_gradients, average_metrics, check_replicas,
                                        pick_device, synchronize_batch_norms)
from matchnas.train.estimate import PLAN_FILE, write_timing
from matchnas.train.interrupt import StopRequest
from matchnas.train.levers import MeanTeacher, teacher_first
from matchnas.train.metrics_log import truncate_metrics
from matchnas.train.narrow import narrow_space
from matchnas.train.optimizer import build_optimizer
from matchnas.train.sampler import sandwich
from matchnas.train.fewshot_split import SplitPlan, SplitSupernet, part_schedule, restrict_pool, split_step, split_supernet
from matchnas.train.step import LossSettings, NonFiniteLoss, train_step

TIMING_KEYS = ("images_per_s", "seconds")  # metrics that differ between identical runs
FEWSHOT_FILE = "fewshot.json"  # the few-shot split plan (split.json is the data split)


def build_supernet(experiment: Experiment, num_classes: int, checkpoint: dict | None = None) -> Supernet:
    """A new run's supernet: the pre-trained backbone in the experiment's space. With a run's
    ``checkpoint``: that run's supernet, rebuilt by :func:`matchnas.run.rebuild_supernet` from
    the space the checkpoint recorded (the caller loads its weights)."""
    if checkpoint is not None:
        return rebuild_supernet(experiment, num_classes, checkpoint)
    m = experiment.model
    supernet = from_pretrained(m.backbone, space=m.space, num_classes=num_classes, seed=experiment.train.seed,
                               weights=m.weights)
    supernet.dropout.p = m.dropout
    return supernet


def single_config(experiment: Experiment, supernet: Supernet) -> SubnetConfig | None:
    """The fixed subnet of a single-model run (``train.single``), or None for a supernet run."""
    single = experiment.train.single
    if single is None:
        return None
    space = supernet.space
    if single in ("max", "min"):
        return space.max() if single == "max" else space.min()
    return space.config_from_file(single, "train.single")


@dataclass
class Job:
    """What every step of one training job reads and none changes."""

    experiment: Experiment
    run_dir: Path
    placement: Placement
    data: RunData
    settings: LossSettings
    fixed: SubnetConfig | None  # the subnet of a single-model run
    pool: Sequence[SubnetConfig] | None  # the narrowed pool (None: the whole space)
    labelled: BatchStream
    unlabelled: BatchStream | None


@dataclass
class Training:
    """What the steps advance and each checkpoint saves: the supernet (split into sub-supernets
    once ``fewshot`` is set), its optimizer and schedule, the selection index, the mean teacher,
    and the step to train next."""

    supernet: Supernet | SplitSupernet
    optimizer: torch.optim.Optimizer
    schedule: Any
    index: SelectionIndex
    mean_teacher: MeanTeacher | None = None
    fewshot: SplitPlan | None = None
    step: int = 0

    def state(self, job: Job, step: int) -> dict[str, Any]:
        """The checkpoint after ``step`` steps (everything :func:`resume` continues from)."""
        return {
            "step": step,
            "model": self.supernet.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "selection_index": self.index.to_json(),
            "ema_teacher": self.mean_teacher.model.state_dict() if self.mean_teacher is not None else None,
            "split": self.fewshot.to_dict() if self.fewshot is not None else None,
            "experiment": job.experiment.to_dict(),
            "space": self.supernet.space.to_dict(),
            "normalisation": job.data.normalisation.to_record(),
            "classes": list(job.data.source.train.classes),
        }


def train(experiment: Experiment, run_dir: str | Path, resume: bool = False,
          placement: Placement | None = None, plan=None) -> dict[str, float]:
    """Train (or continue) the run in ``run_dir``; returns the final evaluation (rank 0; other
    ranks return an empty dict). ``placement`` defaults to one process on ``train.device``.
    Automatic settings (None) are filled from the data (:mod:`matchnas.defaults`); ``plan``
    (:func:`matchnas.train.plan.make_plan`, whose experiment this is) is saved as ``plan.json``,
    and the run's measured time is written next to its estimate in ``timing.json``. The run folder
    is locked while the run trains (:func:`matchnas.train.claim.claim_run`)."""
    run_dir = as_path(run_dir, "run directory")
    if not experiment.resolved:
        experiment, _ = resolve(experiment, survey(experiment.data.source, experiment.data.data_dir))
    t = experiment.train
    if placement is None:
        placement = Placement(device=pick_device(t.device))
    if t.precision == "bf16" and placement.device.type != "cuda":
        raise MatchnasError(f"train.precision=bf16 needs a CUDA device; this run trains on {placement.device.type}: use fp32")
    for name, size in (("train.batch_size", t.batch_size), ("unlabelled batch", t.unlabeled_ratio * t.batch_size)):
        if size % placement.world_size:
            raise MatchnasError(f"{name} {size} is not divisible by the {placement.world_size} ranks")
    # A run directory without a checkpoint holds nothing worth keeping (a run stopped before its
    # first checkpoint): it may be started again, or resumed from step 0.
    with claim_run(run_dir, placement, resume):
        return _train_claimed(experiment, run_dir, resume, placement, plan)


def _train_claimed(experiment: Experiment, run_dir: Path, resume: bool, placement: Placement, plan) -> dict[str, float]:
    """:func:`train`, once the run folder is this job's: read the data (and the checkpoint to
    continue), build the supernet, start the run folder (a new run), restore the training state,
    train the steps, evaluate."""
    # Everything that can fail on bad input happens before the run directory is written.
    checkpoint = load_checkpoint(run_dir / LATEST) if resume and (run_dir / LATEST).exists() else None
    began = time.perf_counter()
    data = _load_data(experiment, run_dir, resume, checkpoint)
    load_seconds = time.perf_counter() - began
    held_out(data)  # a run with nothing to evaluate on is refused before it trains
    if checkpoint is not None:
        check_belongs(run_dir / LATEST, checkpoint, experiment, list(data.source.train.classes), run_dir)
    supernet = build_supernet(experiment, data.num_classes, checkpoint)
    fixed = single_config(experiment, supernet)
    settings = LossSettings.from_train_config(experiment.train)
    if len(data.sets.unlabeled) == 0 and settings.loss != "sup":
        raise MatchnasError(f"train.loss={experiment.train.loss} needs unlabelled images, and the split left none")
    if placement.is_main:
        remove_leftovers(run_dir)  # temps of a writer killed mid-write (a checkpoint: tens of MB)
    if resume:
        pool = load_pool(run_dir, supernet.space)
    else:
        pool = _start_run(experiment, run_dir, placement, data, supernet, fixed, plan)

    training = _restore(experiment, placement, supernet, settings, checkpoint)
    if placement.is_main:
        truncate_metrics(run_dir / "metrics.jsonl", training.step)
    job = Job(experiment, run_dir, placement, data, settings, fixed, pool,
              *batch_streams(experiment, data, settings.loss))
    _train_steps(job, training)
    if not placement.is_main:
        return {}
    return _evaluate(job, training.supernet, load_seconds)


def _load_data(experiment: Experiment, run_dir: Path, resume: bool, checkpoint: dict | None) -> RunData:
    """The run's data: a resumed run keeps its split and the normalisation its checkpoint
    recorded; a new one draws the split and takes the backbone's normalisation."""
    recorded = Normalisation.from_record(checkpoint.get("normalisation")) if checkpoint is not None else None
    return prepare_data(experiment, run_dir, reuse_split=resume, normalisation=recorded)


def _start_run(experiment: Experiment, run_dir: Path, placement: Placement, data: RunData, supernet: Supernet,
               fixed: SubnetConfig | None, plan) -> list[SubnetConfig] | None:
    """A new run: narrow the space when ``narrow.proxy`` is set, and write the run folder's
    starting files (the data split, the pool, the experiment, the plan). Returns the pool."""
    t, n = experiment.train, experiment.narrow
    pool, records = None, None
    if n.proxy is not None and fixed is None:
        images = data.sets.unlabeled.images if len(data.sets.unlabeled) else data.sets.labeled.images
        pool, records = narrow_space(supernet, images, n.proxy, n.candidates, n.keep, n.bins, t.seed, data.normalisation)
    if placement.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_split(data.split, run_dir / "split.json")
        if pool is not None:
            save_pool(run_dir, pool, records, dataclasses.asdict(n))
        else:  # a restarted run must not inherit the pool of the attempt it replaces
            (run_dir / POOL_FILE).unlink(missing_ok=True)
        atomic_write_text(run_dir / "experiment.yaml", yaml.safe_dump(experiment.to_dict(), sort_keys=False))
        if plan is not None:
            atomic_write_json(run_dir / PLAN_FILE, plan.to_dict())
    return pool


def _restore(experiment: Experiment, placement: Placement, supernet: Supernet, settings: LossSettings,
             checkpoint: dict | None) -> Training:
    """The training state on this rank's device: a new one, or the checkpoint's (weights,
    optimizer, schedule, selection index, step, mean teacher, few-shot split)."""
    t = experiment.train
    fewshot = SplitPlan.from_dict(checkpoint["split"]) if checkpoint and checkpoint.get("split") else None
    if fewshot is not None:
        supernet = SplitSupernet.from_parent(supernet, fewshot)
    supernet = supernet.to(placement.device, memory_format=devices.memory_format(placement.device))
    if t.sync_bn:
        synchronize_batch_norms(supernet, placement)
    optimizer, schedule = build_optimizer(supernet, experiment)
    training = Training(supernet, optimizer, schedule, SelectionIndex(), fewshot=fewshot)
    if checkpoint is not None:
        supernet.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
        training.index = SelectionIndex.from_json(checkpoint["selection_index"])
        training.step = checkpoint["step"]
    if t.ema_teacher > 0 and (settings.uses_fixmatch or settings.uses_distillation):
        training.mean_teacher = MeanTeacher(supernet, t.ema_teacher)
        if checkpoint is not None:
            training.mean_teacher.model.load_state_dict(checkpoint["ema_teacher"])
    return training


def _train_steps(job: Job, training: Training) -> None:
    """Steps ``training.step`` to ``train.steps``: split the supernet at the split step, train,
    log, checkpoint every ``checkpoint_every`` steps; on a stop request, checkpoint and raise
    :class:`Interrupted`; at the end, the latest and final checkpoints."""
    t, run_dir, placement = job.experiment.train, job.run_dir, job.placement
    autocast = torch.autocast(placement.device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16")
    training.supernet.train()
    progress = tqdm(range(training.step, t.steps), initial=training.step, total=t.steps, desc="train", unit="step",
                    dynamic_ncols=True, disable=not placement.is_main)
    log = open(run_dir / "metrics.jsonl", "a") if placement.is_main else None
    stop = StopRequest(terminate=True, repeat_grace=5.0 if placement.distributed else 0.0).start()
    try:
        for step in progress:
            began = time.perf_counter()
            if training.fewshot is None and step == split_step(job.experiment):
                _split(job, training, step, autocast)
            metrics, images = _step(job, training, step, autocast)
            seconds = time.perf_counter() - began
            if placement.is_main:
                _log_step(log, progress, step, training.optimizer, metrics, images, seconds)
            if (step + 1) % t.checkpoint_every == 0 and step + 1 < t.steps:
                _checkpoint(job, training, stop, log, LATEST, step + 1)
            if any_rank(stop.requested, placement):
                _checkpoint(job, training, stop, log, LATEST, step + 1)
                raise Interrupted(f"{_stopped(stop)}: step {step + 1} of {t.steps} saved in {run_dir / LATEST}; "
                                  f"continue with `matchnas train --resume {run_dir}`", stop.signum)
        progress.close()
        _checkpoint(job, training, stop, log, LATEST, t.steps)
        _checkpoint(job, training, stop, log, FINAL, t.steps)
        if stop.requested:  # during the last checkpoints: they are complete, the evaluation is not
            raise Interrupted(f"{_stopped(stop)}: all {t.steps} steps saved in {run_dir / FINAL}; "
                              f"`matchnas train --resume {run_dir}` evaluates it", stop.signum)
    finally:
        stop.restore()
        progress.close()
        if log is not None:
            log.close()


def _step(job: Job, training: Training, step: int, autocast) -> tuple[dict[str, float], int]:
    """One step: the subnets (the sandwich, under the teacher-first rule), the batch, forward and
    backward of each subnet, gradients averaged over ranks, the optimizer step. Returns the named
    metrics averaged over ranks and the number of images the step saw."""
    t, placement, supernet = job.experiment.train, job.placement, training.supernet
    torch.manual_seed(step + 1_000_003 * t.seed)  # dropout: a function of (seed, step) too
    configs, part = _subnets(job, training, step)
    configs, weight = teacher_first(configs, step, t.steps, t.teacher_warmup, t.student_ramp)
    for config in configs:
        training.index.record(config, step + 1)
    batch = make_batch(job.data, job.experiment, step, job.labelled, job.unlabelled, placement)

    training.optimizer.zero_grad(set_to_none=True)
    try:
        with autocast:
            metrics = train_step(supernet, configs, batch, job.settings, student_weight=weight,
                                 mean_teacher=training.mean_teacher.model if training.mean_teacher is not None else None)
    except NonFiniteLoss as err:
        raise MatchnasError(f"{err} at step {step}: stopped; the last good checkpoint is {job.run_dir / LATEST}") from None
    average_gradients(supernet, placement)
    training.optimizer.step()
    training.schedule.step()
    if training.mean_teacher is not None:
        training.mean_teacher.update(supernet, step)

    metrics = average_metrics(metrics, placement)
    if part is not None:
        metrics["part"] = part
    if t.teacher_warmup or t.student_ramp:
        metrics["student_weight"] = weight
    images = placement.world_size * (batch.x.shape[0] + (batch.u_weak.shape[0] if batch.u_weak is not None else 0))
    return metrics, images


def _subnets(job: Job, training: Training, step: int) -> tuple[list[SubnetConfig], int | None]:
    """The step's subnets, teacher first, and the sub-supernet they train (None: not split)."""
    t, space, fewshot = job.experiment.train, training.supernet.space, training.fewshot
    if job.fixed:
        return [job.fixed], None
    if fewshot is None:
        return sandwich(space, t.seed, step, t.n_random, job.pool), None
    part = part_schedule(fewshot, step)
    return sandwich(fewshot.subspace(space, part), t.seed, step, t.n_random, restrict_pool(job.pool, fewshot, part)), part


def _checkpoint(job: Job, training: Training, stop: StopRequest, log, name: str, step: int) -> None:
    """Write checkpoint ``name`` after ``step`` steps (rank 0, once the replicas are checked to
    agree); a signal during the write is honoured once it is complete."""
    if log is not None:
        log.flush()
    check_replicas(training.supernet, job.placement)
    if not job.placement.is_main:
        return
    with stop.shield():
        save_checkpoint(job.run_dir / name, training.state(job, step))
        training.index.save(job.run_dir / "selection_index.json")


def _evaluate(job: Job, supernet: Supernet, load_seconds: float) -> dict[str, float]:
    """The final evaluation (``eval.json``) and the run's measured time (``timing.json``)."""
    # evaluated on the training device (a GPU evaluates the subnets in seconds)
    targets = {"single": job.fixed} if job.fixed else {"max": supernet.space.max(), "min": supernet.space.min()}
    began = time.perf_counter()
    results = {name: top1(supernet, config, job.data, job.experiment) for name, config in targets.items()}
    atomic_write_json(job.run_dir / "eval.json", results)
    write_timing(job.run_dir, load_seconds, time.perf_counter() - began)
    return results


def _stopped(stop: StopRequest) -> str:
    return "terminated (SIGTERM)" if stop.name == "SIGTERM" else "interrupted"


def _split(job: Job, training: Training, step: int, autocast) -> None:
    """Split the supernet now (:func:`split_supernet`) and record the plan in ``fewshot.json``."""
    training.supernet, training.optimizer, training.schedule, training.fewshot = split_supernet(
        training.supernet, training.optimizer, training.schedule, job.experiment, job.data, job.labelled,
        job.unlabelled, job.settings, step, autocast)
    if job.placement.is_main:
        atomic_write_json(job.run_dir / FEWSHOT_FILE, training.fewshot.to_dict())


def _log_step(log, progress, step: int, optimizer, metrics: dict[str, float], images: int, seconds: float) -> None:
    record = {"step": step + 1, "lr": optimizer.param_groups[0]["lr"], **metrics}
    if "pl_kept" in record:
        kept, correct = record.pop("pl_kept"), record.pop("pl_correct")
        if kept > 0:
            record["pl_acc"] = correct / kept
    record.update(images_per_s=images / seconds, seconds=seconds)
    log.write(to_json(record) + "\n")
    shown = {"loss": f"{metrics['loss']:.3f}", "img/s": f"{images / seconds:.0f}"}
    if "mask_rate" in metrics:
        shown["mask"] = f"{metrics['mask_rate']:.2f}"
    progress.set_postfix(shown)


def resume(run_dir: str | Path, placement: Placement | None = None) -> dict[str, float]:
    run_dir = Path(run_dir)
    experiment = read_experiment(run_dir)  # without a checkpoint: from step 0, on the saved split
    return train(experiment, run_dir, resume=True, placement=placement)
