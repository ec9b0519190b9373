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
import math
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from matchnas import devices
from matchnas.checkpoint import FINAL, LATEST, check_belongs, load_checkpoint, save_checkpoint
from matchnas.checkpoint import has_checkpoint  # noqa: F401  (its home before checkpoint.py; cli and plan import it here)
from matchnas.convert import from_pretrained
from matchnas.data.survey import survey
from matchnas.defaults import resolve
from matchnas.data import BatchStream, Normalisation, generator_for, save_split, strong, weak
from matchnas.errors import Interrupted, MatchnasError
from matchnas.experiment import Experiment
from matchnas.io import as_path, atomic_write_json, atomic_write_text, remove_leftovers, to_json
from matchnas.nn import Supernet
from matchnas.pool import POOL_FILE, load_pool, save_pool
from matchnas.run import RunData, held_out, prepare_data, read_experiment, rebuild_supernet, top1
from matchnas.selection_index import SelectionIndex
from matchnas.space import SubnetConfig
from matchnas.train.distributed import (
    Placement,
    any_rank,
    average_gradients,
    average_metrics,
    check_replicas,
    pick_device,
    shard,
    synchronize_batch_norms,
)
from matchnas.train.claim import claim_run
from matchnas.train.interrupt import StopRequest
from matchnas.train.estimate import PLAN_FILE, write_timing
from matchnas.train.levers import MeanTeacher, student_weight
from matchnas.train.metrics_log import truncate_metrics
from matchnas.train.narrow import narrow_space
from matchnas.train.sampler import sandwich
from matchnas.train.split import (
    SplitPlan,
    SplitSupernet,
    copy_momentum,
    momentum_by_name,
    part_schedule,
    plan_split,
    restrict_pool,
)
from matchnas.train.step import LossSettings, NonFiniteLoss, StepBatch, train_step

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


def build_optimizer(model: torch.nn.Module, experiment: Experiment):
    """SGD with Nesterov momentum; weight decay on conv and linear weights only (not on biases,
    BN, or the kernel transforms, which start at the identity); linear warm-up then cosine down
    to ``final_lr * lr``. With ``body_lr_scale != 1`` everything but the new classifier (the
    pre-trained body) learns at ``body_lr_scale * lr`` (fine-tuning: the body moves less than
    the head that starts from scratch), in groups of their own."""
    t = experiment.train
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        decays = p.dim() > 1 and ".transforms." not in name
        body = t.body_lr_scale != 1.0 and name.split(".")[-2] != "classifier"  # also parts.N.classifier
        groups.setdefault((body, decays), []).append(p)
    optimizer = torch.optim.SGD(
        [{"params": params, "weight_decay": t.weight_decay if decays else 0.0,
          "lr": t.lr * (t.body_lr_scale if body else 1.0)}
         for (body, decays), params in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1]))],
        lr=t.lr,
        momentum=t.momentum,
        nesterov=True,
    )

    def factor(step: int) -> float:
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
        return t.final_lr + (1.0 - t.final_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def single_config(experiment: Experiment, supernet: Supernet) -> SubnetConfig | None:
    """The fixed subnet of a single-model run (``train.single``), or None for a supernet run."""
    single = experiment.train.single
    if single is None:
        return None
    space = supernet.space
    if single in ("max", "min"):
        return space.max() if single == "max" else space.min()
    return space.config_from_file(single, "train.single")


def make_batch(data: RunData, experiment: Experiment, step: int, labelled: BatchStream,
               unlabelled: BatchStream | None, placement: Placement = Placement()) -> StepBatch:
    """This rank's slice of the step's model-ready views. Every rank draws the same global batch
    and augmentations from ``(seed, step)`` and keeps its slice, so the data of a run does not
    depend on how many ranks train it."""
    seed, device = experiment.train.seed, placement.device

    def ready(images: torch.Tensor) -> torch.Tensor:
        x = data.model_input(shard(images, placement))
        return x.to(device, non_blocking=True).contiguous(memory_format=devices.memory_format(device))

    idx = labelled.global_batch(step)
    x = ready(weak(data.sets.labeled.images[idx], generator_for(seed, step, 0), flip=data.flip))
    y = shard(data.sets.labeled.labels[idx], placement).to(device)
    if unlabelled is None:
        return StepBatch(x, y, None, None)
    uidx = unlabelled.global_batch(step)
    u = data.sets.unlabeled.images[uidx]
    u_weak = ready(weak(u, generator_for(seed, step, 1), flip=data.flip))
    u_strong = ready(strong(u, generator_for(seed, step, 2), flip=data.flip))
    truth = shard(data.unlabeled_truth[uidx], placement).to(device) if data.unlabeled_truth is not None else None
    return StepBatch(x, y, u_weak, u_strong, truth)


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
    """:func:`train`, once the run folder is this job's."""
    t = experiment.train
    # Everything that can fail on bad input happens before the run directory is written.
    state = load_checkpoint(run_dir / LATEST) if resume and (run_dir / LATEST).exists() else None
    # a resumed run keeps the normalisation its checkpoint recorded; a new one takes the backbone's
    recorded = Normalisation.from_record(state.get("normalisation")) if state is not None else None
    began = time.perf_counter()
    data = prepare_data(experiment, run_dir, reuse_split=resume, normalisation=recorded)
    load_seconds = time.perf_counter() - began
    held_out(data)
    if state is not None:
        check_belongs(run_dir / LATEST, state, experiment, list(data.source.train.classes), run_dir)
    supernet = build_supernet(experiment, data.num_classes, state)
    fixed = single_config(experiment, supernet)
    settings = LossSettings.from_train_config(t)
    if len(data.sets.unlabeled) == 0 and settings.loss != "sup":
        raise MatchnasError(f"train.loss={t.loss} needs unlabelled images, and the split left none")
    if placement.is_main:
        remove_leftovers(run_dir)  # temps of a writer killed mid-write (a checkpoint: tens of MB)
    if resume:
        pool = load_pool(run_dir, supernet.space)
    else:
        pool, records = None, None
        if experiment.narrow.proxy is not None and fixed is None:
            n = experiment.narrow
            images = data.sets.unlabeled.images if len(data.sets.unlabeled) else data.sets.labeled.images
            pool, records = narrow_space(supernet, images, n.proxy, n.candidates, n.keep, n.bins, t.seed,
                                          data.normalisation)
        if placement.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_split(data.split, run_dir / "split.json")
            if pool is not None:
                save_pool(run_dir, pool, records, dataclasses.asdict(experiment.narrow))
            else:  # a restarted run must not inherit the pool of the attempt it replaces
                (run_dir / POOL_FILE).unlink(missing_ok=True)
            atomic_write_text(run_dir / "experiment.yaml", yaml.safe_dump(experiment.to_dict(), sort_keys=False))
            if plan is not None:
                atomic_write_json(run_dir / PLAN_FILE, plan.to_dict())

    plan = SplitPlan.from_dict(state["split"]) if state and state.get("split") else None
    if plan is not None:
        supernet = SplitSupernet.from_parent(supernet, plan)
    supernet = supernet.to(placement.device, memory_format=devices.memory_format(placement.device))
    if t.sync_bn:
        synchronize_batch_norms(supernet, placement)
    optimizer, schedule = build_optimizer(supernet, experiment)
    index = SelectionIndex()
    start = 0
    if state is not None:
        supernet.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        index = SelectionIndex.from_json(state["selection_index"])
        start = state["step"]
    uses_teacher = settings.uses_fixmatch or settings.uses_distillation
    mean_teacher = MeanTeacher(supernet, t.ema_teacher) if t.ema_teacher > 0 and uses_teacher else None
    if mean_teacher is not None and state is not None:
        mean_teacher.model.load_state_dict(state["ema_teacher"])
    if placement.is_main:
        truncate_metrics(run_dir / "metrics.jsonl", start)

    labelled = BatchStream(len(data.sets.labeled), t.batch_size, t.seed, stream=0)
    unlabelled = None
    if settings.loss != "sup":
        unlabelled = BatchStream(len(data.sets.unlabeled), t.unlabeled_ratio * t.batch_size, t.seed, stream=1)

    def checkpoint(path: Path, step: int) -> None:
        check_replicas(supernet, placement)
        if not placement.is_main:
            return
        with stop.shield():  # a signal now is honoured once the write is complete
            _save(path, step)

    def _save(path: Path, step: int) -> None:
        state = {
            "step": step,
            "model": supernet.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "selection_index": index.to_json(),
            "ema_teacher": mean_teacher.model.state_dict() if mean_teacher is not None else None,
            "split": plan.to_dict() if plan is not None else None,
            "experiment": experiment.to_dict(),
            "space": supernet.space.to_dict(),
            "normalisation": data.normalisation.to_record(),
            "classes": list(data.source.train.classes),
        }
        save_checkpoint(path, state)
        index.save(run_dir / "selection_index.json")

    autocast = torch.autocast(placement.device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16")
    supernet.train()
    progress = tqdm(range(start, t.steps), initial=start, total=t.steps, desc="train", unit="step",
                    dynamic_ncols=True, disable=not placement.is_main)
    log = open(run_dir / "metrics.jsonl", "a") if placement.is_main else None
    stop = StopRequest(terminate=True, repeat_grace=5.0 if placement.distributed else 0.0).start()
    try:
        for step in progress:
            began = time.perf_counter()
            if plan is None and step == split_step(experiment):
                supernet, optimizer, schedule, plan = split_supernet(
                    supernet, optimizer, schedule, experiment, data, labelled, unlabelled, settings, step, autocast)
                if placement.is_main:
                    atomic_write_json(run_dir / FEWSHOT_FILE, plan.to_dict())
            torch.manual_seed(step + 1_000_003 * t.seed)  # dropout: a function of (seed, step) too
            if fixed:
                configs, part = [fixed], None
            elif plan is None:
                configs, part = sandwich(supernet.space, t.seed, step, t.n_random, pool), None
            else:
                part = part_schedule(plan, step)
                configs = sandwich(plan.subspace(supernet.space, part), t.seed, step, t.n_random,
                                   restrict_pool(pool, plan, part))
            weight = student_weight(step, t.steps, t.teacher_warmup, t.student_ramp)
            if weight == 0.0:
                configs = configs[:1]  # the teacher's warm-up: students are not even forwarded
            for config in configs:
                index.record(config, step + 1)
            batch = make_batch(data, experiment, step, labelled, unlabelled, placement)

            optimizer.zero_grad(set_to_none=True)
            try:
                with autocast:
                    metrics = train_step(supernet, configs, batch, settings, student_weight=weight,
                                         mean_teacher=mean_teacher.model if mean_teacher is not None else None)
            except NonFiniteLoss as err:
                raise MatchnasError(
                    f"{err} at step {step}: stopped; the last good checkpoint is {run_dir / LATEST}"
                ) from None
            average_gradients(supernet, placement)
            optimizer.step()
            schedule.step()
            if mean_teacher is not None:
                mean_teacher.update(supernet, step)

            metrics = average_metrics(metrics, placement)
            if part is not None:
                metrics["part"] = part
            if t.teacher_warmup or t.student_ramp:
                metrics["student_weight"] = weight
            seconds = time.perf_counter() - began
            images = placement.world_size * (batch.x.shape[0] + (batch.u_weak.shape[0] if batch.u_weak is not None else 0))
            if placement.is_main:
                _log_step(log, progress, step, optimizer, metrics, images, seconds)
            if (step + 1) % t.checkpoint_every == 0 and step + 1 < t.steps:
                if log is not None:
                    log.flush()
                checkpoint(run_dir / LATEST, step + 1)
            if any_rank(stop.requested, placement):
                if log is not None:
                    log.flush()
                checkpoint(run_dir / LATEST, step + 1)
                raise Interrupted(f"{_stopped(stop)}: step {step + 1} of {t.steps} saved in {run_dir / LATEST}; "
                                  f"continue with `matchnas train --resume {run_dir}`", stop.signum)
        progress.close()
        if log is not None:
            log.flush()
        checkpoint(run_dir / LATEST, t.steps)
        checkpoint(run_dir / FINAL, t.steps)
        if stop.requested:  # during the last checkpoints: they are complete, the evaluation is not
            raise Interrupted(f"{_stopped(stop)}: all {t.steps} steps saved in {run_dir / FINAL}; "
                              f"`matchnas train --resume {run_dir}` evaluates it", stop.signum)
    finally:
        stop.restore()
        progress.close()
        if log is not None:
            log.close()
    if not placement.is_main:
        return {}

    # evaluated on the training device (a GPU evaluates the subnets in seconds)
    targets = {"single": fixed} if fixed else {"max": supernet.space.max(), "min": supernet.space.min()}
    began = time.perf_counter()
    results = {name: top1(supernet, config, data, experiment) for name, config in targets.items()}
    atomic_write_json(run_dir / "eval.json", results)
    write_timing(run_dir, load_seconds, time.perf_counter() - began)
    return results


def _stopped(stop: StopRequest) -> str:
    return "terminated (SIGTERM)" if stop.name == "SIGTERM" else "interrupted"


def split_step(experiment: Experiment) -> int | None:
    """The step at which the one-shot supernet is split (None: it never is)."""
    sp = experiment.split
    if sp.method == "none" or experiment.train.single is not None:
        return None
    return max(1, round(sp.at * experiment.train.steps))


def split_supernet(supernet: Supernet, optimizer, schedule, experiment: Experiment, data: RunData,
                   labelled: BatchStream, unlabelled: BatchStream | None, settings: LossSettings, step: int,
                   autocast) -> tuple[SplitSupernet, torch.optim.Optimizer, object, SplitPlan]:
    """Plan the split on the warmed-up supernet, copy it into the sub-supernets, and carry the
    optimizer over (momentum per parameter, the current learning rate, the schedule's position).

    Each choice's gradient is that of the run's loss for one subnet (labelled + FixMatch with the
    subnet's own pseudo-labels; distillation needs a teacher, so it is left out), taken on whole
    global batches drawn past the run's last step: every rank of a distributed run computes the
    same plan."""
    sp, t = experiment.split, experiment.train
    scoring = dataclasses.replace(settings, loss="sup" if settings.loss == "kd" else settings.loss,
                                  pseudo_labels="self", lambda_kd=0.0)
    batches = [make_batch(data, experiment, t.steps + 1 + i, labelled, unlabelled,
                          Placement(device=next(supernet.parameters()).device)) for i in range(sp.batches)]

    def gradient_of(model, config, batch):
        torch.manual_seed(t.seed)
        with autocast:
            train_step(model, [config], batch, scoring)

    plan = plan_split(sp.method, supernet, sp.edges, sp.dimension, sp.groups, step, t.seed, batches, gradient_of)
    parent_momentum = momentum_by_name(optimizer, supernet)
    split = SplitSupernet.from_parent(supernet, plan)
    new_optimizer, new_schedule = build_optimizer(split, experiment)
    copy_momentum(new_optimizer, parent_momentum, split)
    new_schedule.load_state_dict(schedule.state_dict())
    for new, old in zip(new_optimizer.param_groups, optimizer.param_groups):
        new["lr"] = old["lr"]
    return split, new_optimizer, new_schedule, plan


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

