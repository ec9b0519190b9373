"""matchnas: train one semi-supervised supernet from a pre-trained CNN, deploy a subnet per budget.

Names are imported lazily (PEP 562), so that ``matchnas predict`` runs an exported ONNX bundle
in an environment without PyTorch.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "BACKBONES": "matchnas.convert",
    "from_pretrained": "matchnas.convert",
    "MatchnasError": "matchnas.errors",
    "StaticNet": "matchnas.nn",
    "Supernet": "matchnas.nn",
    "SearchSpace": "matchnas.space",
    "StageConfig": "matchnas.space",
    "SubnetConfig": "matchnas.space",
    "load_space": "matchnas.space_file",
    "cost": "matchnas.cost",
    "open_run": "matchnas.run",
    "Run": "matchnas.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'matchnas' has no attribute '{name}'")
    module = import_module(_EXPORTS[name])
    return module if module.__name__.endswith(f".{name}") else getattr(module, name)
