"""Semi-supervised supernet training: pure losses, the sandwich sampler, one step, the loop."""

from matchnas.train.loop import load_run, resume, train
from matchnas.train.sampler import SelectionIndex, sandwich
from matchnas.train.step import LossSettings, StepBatch, train_step

__all__ = ["LossSettings", "SelectionIndex", "StepBatch", "load_run", "resume", "sandwich", "train", "train_step"]
