"""Running a ``.tflite`` file in the LiteRT interpreter (``ai-edge-litert``), without PyTorch.

Below both users: :mod:`matchnas.export.litert_format` (parity and latency of an exported file)
and :mod:`matchnas.predict` (classifying images with one). LiteRT is an optional dependency
(``.[litert]``); without it every entry point here fails with one line naming the pip command.

A matchnas ``.tflite`` takes one ``1 x C x R x R`` image per call (batch fixed at 1, the layout of
the PyTorch subnet: the converter puts the NCHW -> NHWC transpose inside the file). A float file
takes and returns float32; a static int8 file (``export --quantize int8``) takes and returns int8,
with the scale and zero point of each stored in the file, as TFLite Micro wants them:
:func:`run_images` quantizes the float32 input with them (``q = round(x / scale) + zero_point``,
clipped to int8) and dequantizes the logits (``x = scale * (q - zero_point)``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from matchnas.errors import MatchnasError
from matchnas.io import check_readable

INSTALL_HINT = "pip install 'matchnas[litert]'"


def interpreter_class():
    """LiteRT's ``Interpreter``, or a one-line error saying what to install."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise MatchnasError(f"LiteRT (.tflite) needs ai-edge-litert, which is not installed: {INSTALL_HINT}") from None
    return Interpreter


def runtime_name() -> str:
    """The runtime that runs the files, for a manifest's ``latency.runtime``."""
    try:
        return f"ai-edge-litert {version('ai-edge-litert')} (XNNPACK delegate)"
    except PackageNotFoundError:
        return "ai-edge-litert (XNNPACK delegate)"


def open_interpreter(path: str | Path, threads: int | None = None):
    """A LiteRT interpreter over ``path`` with its tensors allocated (``threads``: its CPU
    threads, None: LiteRT's choice); a file that is not a ``.tflite`` model is one line."""
    interpreter = interpreter_class()
    check_readable(path, "a .tflite model")
    try:
        model = interpreter(model_path=str(path), num_threads=threads)
        model.allocate_tensors()
    except (ValueError, RuntimeError) as err:  # LiteRT's own messages for a file that is no flatbuffer
        reason = " ".join(str(err).split())[:200]
        raise MatchnasError(f"{path}: not a LiteRT model, the interpreter cannot load it ({reason})") from None
    return model


def run_images(model, images: np.ndarray) -> np.ndarray:
    """Logits (float32, ``N x K``) of ``model`` on ``images`` (float32, ``N x C x R x R``), one
    image per call; an int8 file's input is quantized and its output dequantized (see the module
    docstring)."""
    given, wanted = model.get_input_details()[0], model.get_output_details()[0]
    logits = []
    for image in images:
        model.set_tensor(given["index"], to_input(image[None], given))
        model.invoke()
        logits.append(from_output(model.get_tensor(wanted["index"]), wanted))
    return np.concatenate(logits)


def to_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """A float32 array as the input tensor ``detail`` describes (int8: quantized with its scale
    and zero point)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind != "i":
        return np.ascontiguousarray(x, dtype=dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def from_output(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """An output tensor as float32 (int8: dequantized with its scale and zero point)."""
    if np.dtype(detail["dtype"]).kind != "i":
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return (scale * (y.astype(np.float32) - zero)).astype(np.float32)


class LiteRTSession:
    """A ``.tflite`` file behind the part of onnxruntime's ``InferenceSession`` that
    :mod:`matchnas.predict` uses (inputs, outputs, ``run``, model metadata), so one predict path
    serves both formats. A ``.tflite`` carries no matchnas metadata: its manifest entry, or the
    caller's ``--normalisation``, says how to feed it."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.model = open_interpreter(path, threads)
        given, wanted = self.model.get_input_details()[0], self.model.get_output_details()[0]
        self._inputs = [SimpleNamespace(name=given["name"], shape=[int(d) for d in given["shape"]])]
        self._outputs = [SimpleNamespace(name=wanted["name"], shape=[int(d) for d in wanted["shape"]])]

    def get_inputs(self) -> list:
        return self._inputs

    def get_outputs(self) -> list:
        return self._outputs

    def get_modelmeta(self):
        return SimpleNamespace(custom_metadata_map={})

    def run(self, output_names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        del output_names  # one output: the logits
        (x,) = feed.values()
        return [run_images(self.model, np.asarray(x, dtype=np.float32))]
