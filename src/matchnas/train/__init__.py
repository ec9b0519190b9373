"""Semi-supervised supernet training: pure losses, the sandwich sampler, one step, the loop.

Names are imported lazily (PEP 562): reading a trained run (:mod:`matchnas.run`) uses the few-shot
plan and the selection index defined here without loading the training loop.
"""

from importlib import import_module

_EXPORTS = {
    "LossSettings": "matchnas.train.step",
    "SelectionIndex": "matchnas.train.sampler",
    "StepBatch": "matchnas.train.step",
    "load_run": "matchnas.run",
    "resume": "matchnas.train.loop",
    "sandwich": "matchnas.train.sampler",
    "train": "matchnas.train.loop",
    "train_step": "matchnas.train.step",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'matchnas.train' has no attribute '{name}'")
    return getattr(import_module(_EXPORTS[name]), name)
