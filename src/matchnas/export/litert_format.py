"""LiteRT export (``.tflite``, batch 1) with litert-torch, without TensorFlow, checked and timed
in the LiteRT interpreter (``ai-edge-litert``, its default XNNPACK delegate); an optional
dependency (``.[litert]``).

litert-torch exports the subnet with ``torch.export`` and lowers each ATen op to a TFLite
builtin; the file keeps the subnet's ``1 x C x R x R`` input (a transpose to NHWC is inside it).
An op it has no lowering for stops the export with one line naming the op.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from matchnas.errors import MatchnasError
from matchnas.export.parity import parity_numbers, time_calls
from matchnas.litert_runtime import INSTALL_HINT, interpreter_class, open_interpreter, run_images, runtime_name

# Every module the LiteRT path imports (a test hides them to check the install hint).
LITERT_MODULES = ("litert_torch", "ai_edge_litert.interpreter", "ai_edge_quantizer")
BATCH = "fixed at 1: a .tflite runs one image per call"


def litert_api() -> dict:
    """The converter and quantizer modules, or a one-line error saying what to install."""
    # torchao (a litert-torch dependency) logs warnings about CUDA kernels a CPU build cannot load.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    try:
        import ai_edge_quantizer
        import litert_torch
    except ImportError:
        raise MatchnasError(f"format litert needs litert-torch and ai-edge-quantizer, which are not installed: {INSTALL_HINT}") from None
    interpreter_class()
    return {"convert": litert_torch.convert, "quantizer": ai_edge_quantizer}


@contextlib.contextmanager
def quiet():
    """Hide the converter's and quantizer's progress lines and warnings (Python-level output only)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def convert(net: torch.nn.Module, one: torch.Tensor, path: Path) -> None:
    """Write ``net`` traced on ``one`` (``1 x C x R x R``) as a float32 ``.tflite`` at ``path``."""
    api = litert_api()
    try:
        with quiet(), torch.no_grad():
            api["convert"](net, (one,)).export(str(path))
    except Exception as err:  # noqa: BLE001 (the converter raises whatever its passes raise)
        raise MatchnasError(f"{path.name}: {conversion_failure(err)}: nothing written") from None


def conversion_failure(err: BaseException) -> str:
    """One line on why litert-torch refused a module: the op it has no lowering for when its
    message names one (``Lowering not found: aten.i0.default``), else the op FX was executing,
    else the converter's first line."""
    text = str(err)
    found = re.search(r"Lowering not found: (?:torch\.ops\.)?([\w.]+)", text)
    if found:
        return f"litert-torch cannot convert op {_op(found.group(1))}: LiteRT has no lowering for it"
    executing = re.search(r"target=(?:torch\.ops\.)?([\w.]+)", text)
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)[:200]
    if executing:
        return f"litert-torch cannot convert op {_op(executing.group(1))}: {first}"
    return f"litert-torch cannot convert the subnet ({type(err).__name__}: {first})"


def _op(name: str) -> str:
    """``aten.i0.default`` -> ``aten.i0`` (the overload says nothing to a user)."""
    return re.sub(r"\.(default|Tensor|Scalar|int|float)$", "", name)


def export_litert(net, x: torch.Tensor, path: Path, meta: dict, threads: int, runs: int) -> dict:
    """Write ``path`` (a float32 ``.tflite``), run it on ``x`` image by image against ``net``
    and time it; returns the manifest record (``meta`` is not embedded: a ``.tflite`` is read
    through its manifest)."""
    del meta
    one = x[:1].contiguous()
    convert(net, one, path)
    model = open_interpreter(path, threads)
    with torch.no_grad():
        reference = net(x).numpy()
    outputs = run_images(model, x.numpy())
    parity = parity_numbers(reference, outputs)
    parity["batch_sizes"] = [1]
    parity["max_abs_logit"] = float(np.abs(reference).max())  # the scale a relative difference is read against
    image = x[:1].numpy()
    latency = time_calls(lambda: run_images(model, image), runs)
    return {
        "format": "litert",
        "input_shape": [1, int(x.shape[1]), int(x.shape[2]), int(x.shape[3])],
        "batch": BATCH,
        "output_shape": [1, int(reference.shape[1])],
        "converter": f"litert-torch {version('litert-torch')}",
        "backend": "XNNPACK",
        "parity": parity,
        "latency": {**latency, "runtime": runtime_name(), "threads": threads},
    }
