"""The packages' lazily imported names all resolve (a moved module breaks them only at use)."""

import importlib

import pytest


@pytest.mark.parametrize("package", ["matchnas", "matchnas.train"])
def test_every_exported_name_resolves(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
