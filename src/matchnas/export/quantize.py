"""``matchnas export --quantize int8``: each float32 file also as a static int8 model, calibrated,
measured and held to an accuracy tolerance.

Per format a quantizer (:data:`matchnas.export.formats.REGISTRY`, field ``quantizer``) writes the
int8 file and returns its logits on the held-out images: onnxruntime's static QDQ quantization
(:mod:`~matchnas.export.quantize_onnx`), PT2E with the XNNPACK quantizer
(:mod:`~matchnas.export.quantize_executorch`) or ai-edge-quantizer on the ``.tflite``
(:mod:`~matchnas.export.quantize_litert`). This module gives all of them the same inputs and
judges them alike:

- calibration images: the weak views of training images that BN recalibration uses (same images,
  same seed, :func:`matchnas.evaluate.recalibration_batches`), so activation ranges are
  observed on the distribution the BN statistics were estimated on;
- accuracy: top-1 on every held-out image against the label, its drop from the float32 subnet's
  top-1 in percentage points, and top-1 agreement with the float32 PyTorch subnet;
- the tolerance: a drop above ``tolerance`` points (default :data:`DROP_TOLERANCE`) fails the
  export with one line naming the file and the drop; the bundle is built in a temp folder, so
  nothing is left behind.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from matchnas.errors import MatchnasError

if TYPE_CHECKING:
    from matchnas.data import Normalisation

PRECISIONS = ("int8",)
DROP_TOLERANCE = 1.0  # percentage points of test top-1 an int8 model may lose against float32


def parse_quantize(quantize: str | None) -> str | None:
    """``None``/``"none"`` -> None (float32 only); ``"int8"`` -> ``"int8"``; anything else: an error."""
    if quantize is None or str(quantize).strip().lower() in ("", "none"):
        return None
    name = str(quantize).strip().lower()
    if name not in PRECISIONS:
        raise MatchnasError(f"unknown --quantize '{quantize}': choose from {', '.join(PRECISIONS)}")
    return name


def file_key(fmt: str, precision: str) -> str:
    """The manifest key of a file: ``"onnx"`` for float32, ``"onnx-int8"`` for int8."""
    return f"{fmt}-{precision}"


def file_suffix(suffix: str, precision: str) -> str:
    return f".{precision}{suffix}"


def calibration_set(pool: torch.Tensor, resolution: int, n_images: int, seed: int, flip: bool,
                    normalisation: Normalisation) -> tuple[np.ndarray, dict]:
    """The model-ready calibration images (``N x C x R x R`` float32, normalised as the run is)
    and their manifest record."""
    from matchnas.evaluate import recalibration_batches

    batches = recalibration_batches(pool, resolution, n_images, seed, flip, normalisation=normalisation)
    images = torch.cat(batches).contiguous()
    array = images.numpy().astype(np.float32)
    return array, {
        "images": int(array.shape[0]),
        "source": "weak views of the training pool (labelled + unlabelled), the BN recalibration images",
        "seed": seed,
        "resolution": resolution,
        "sha256": hashlib.sha256(array.tobytes()).hexdigest(),
    }


def quantized_file(quantizer, net: torch.nn.Module, float_path: Path, path: Path, calibration: tuple[np.ndarray, dict],
                   test: tuple[np.ndarray, np.ndarray], float_logits: np.ndarray, float_top1: float,
                   threads: int, runs: int) -> dict[str, Any]:
    """Write the int8 file with ``quantizer`` and return its manifest record with the accuracy
    numbers (fractions; ``top1_drop_points`` in percentage points)."""
    images, labels = test
    record, logits = quantizer(net, float_path, path, calibration[0], images, threads, runs)
    top1 = float((logits.argmax(1) == labels).mean())
    record.update(
        test_top1=top1,
        float32_test_top1=float_top1,
        top1_drop_points=round(100 * (float_top1 - top1), 6),
        top1_agreement_with_float32=float((logits.argmax(1) == float_logits.argmax(1)).mean()),
        test_images=int(len(labels)),
        calibration=calibration[1],
    )
    return record


def check_drop(file_name: str, record: dict, tolerance: float) -> None:
    """Record ``tolerance`` and refuse an int8 file whose top-1 drops by more than it."""
    record["top1_drop_tolerance_points"] = tolerance
    drop = record["top1_drop_points"]
    if not drop <= tolerance:
        raise MatchnasError(
            f"{file_name}: int8 top-1 drops {drop:.2f} points from float32 "
            f"({100 * record['float32_test_top1']:.2f}% -> {100 * record['test_top1']:.2f}% on "
            f"{record['test_images']} test images; tolerance {tolerance:g}, --int8-tolerance): nothing written"
        )
