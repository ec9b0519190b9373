"""One step's model-ready batches, drawn from ``(seed, step)`` (docs/method.md, "One training step").

The labelled batch's weak view, the unlabelled batch's weak and strong views, and the hidden
labels of the unlabelled images when the data set knows them (for the pseudo-label accuracy
metric only), normalised with the run's input normalisation and placed on this rank's device.
"""

from __future__ import annotations

import torch

from matchnas import devices
from matchnas.data import BatchStream, generator_for, strong, weak
from matchnas.experiment import Experiment
from matchnas.run import RunData
from matchnas.train.distributed import Placement, shard
from matchnas.train.step import StepBatch


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


def batch_streams(experiment: Experiment, data: RunData, loss: str) -> tuple[BatchStream, BatchStream | None]:
    """The labelled and unlabelled index streams of a run (no unlabelled stream for ``loss="sup"``)."""
    t = experiment.train
    labelled = BatchStream(len(data.sets.labeled), t.batch_size, t.seed, stream=0)
    if loss == "sup":
        return labelled, None
    return labelled, BatchStream(len(data.sets.unlabeled), t.unlabeled_ratio * t.batch_size, t.seed, stream=1)
