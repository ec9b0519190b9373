"""The export format registry: name -> file suffix, exporter, default parity tolerance.

An exporter is ``(net, x, path, meta, threads, runs) -> record``: it writes ``path``, runs the
file in its own runtime on ``x`` and returns the parity numbers and latency of the manifest. A
quantizer writes the format's static int8 file (:mod:`matchnas.export.quantize`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from matchnas.errors import MatchnasError
from matchnas.export.executorch_format import executorch_api, export_executorch
from matchnas.export.litert_format import export_litert, litert_api
from matchnas.export.onnx_format import export_onnx
from matchnas.export.quantize_executorch import quantize_executorch
from matchnas.export.quantize_litert import quantize_litert
from matchnas.export.quantize_onnx import quantize_onnx


@dataclass(frozen=True)
class Format:
    suffix: str
    exporter: Callable[..., dict]
    tolerance: float  # max |logit difference| against PyTorch (see matchnas.export)
    check_installed: Callable[[], object] | None = None
    # (net, float_path, path, calibration, test_images, threads, runs) -> (record, logits): the
    # static int8 file (see matchnas.export.quantize)
    quantizer: Callable[..., tuple[dict, object]] | None = None


REGISTRY = {
    "onnx": Format(".onnx", export_onnx, 1e-3, quantizer=quantize_onnx),
    "executorch": Format(".pte", export_executorch, 1e-3, executorch_api, quantize_executorch),
    "litert": Format(".tflite", export_litert, 1e-3, litert_api, quantize_litert),
}
FORMATS = tuple(REGISTRY)
SUFFIX = {name: f.suffix for name, f in REGISTRY.items()}
TOLERANCE = {name: f.tolerance for name, f in REGISTRY.items()}


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``"onnx,executorch"`` or a list -> a tuple of known formats; an optional format's packages
    (ExecuTorch, LiteRT) must be importable."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    names = tuple(dict.fromkeys(f.strip().lower() for f in items if f.strip()))
    if not names:
        raise MatchnasError(f"no export format given: choose from {', '.join(FORMATS)}")
    for name in names:
        if name not in FORMATS:
            raise MatchnasError(f"unknown export format '{name}': choose from {', '.join(FORMATS)}")
    for name in names:
        if REGISTRY[name].check_installed is not None:
            REGISTRY[name].check_installed()
    return names
