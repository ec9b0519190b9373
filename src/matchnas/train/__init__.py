"""Semi-supervised supernet training: pure losses, the sandwich sampler, one step, the loop.

Names are imported lazily (PEP 562), so that importing the package loads no training code until a
name is used.
"""

from importlib import import_module

_EXPORTS = {
    "LossSettings": "matchnas.train.step",
    "SelectionIndex": "matchnas.selection_index",
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
