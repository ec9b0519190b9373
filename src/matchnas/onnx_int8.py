"""Static int8 quantization of an ONNX file with onnxruntime (QDQ format).

QDQ keeps the float graph and wraps tensors in QuantizeLinear/DequantizeLinear pairs; onnxruntime's
graph optimiser then fuses each ``DQ -> Conv -> Q`` into an int8 ``QLinearConv`` (and Clip/ReLU
into the ranges before it), so the same file is portable and fast. Weights are int8 per output
channel (symmetric), activations uint8 per tensor with MinMax ranges from the calibration images.
The explicit ``Pad`` of TensorFlow "same" padding gets QDQ on both sides; it pads with the zero
point, which is exactly 0.0 in float.

Its own module, below both users: :mod:`matchnas.export.quantize_onnx` (an exported subnet's int8
file) and :mod:`matchnas.latency.measure` (int8 parts of a latency table).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

QUANT_SETTINGS = {
    "library": "onnxruntime.quantization.quantize_static",
    "format": "QDQ",
    "weights": "int8, per output channel, symmetric",
    "activations": "uint8, per tensor, asymmetric",
    "calibration_method": "MinMax",
}


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over an ``N x C x H x W`` float32 array."""

    def __init__(self, images: np.ndarray, batch_size: int = 64):
        self._batches = iter([{"images": images[i : i + batch_size]} for i in range(0, len(images), batch_size)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def quantize_onnx_file(src: str | Path, dst: str | Path, calibration: np.ndarray) -> None:
    """Write ``dst``: ``src`` quantized to static int8 QDQ, ranges calibrated on ``calibration``
    (model-ready float32 images). ``src``'s metadata (classes, preprocessing) is kept."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="matchnas-quant-") as tmp:
        # Shape inference + graph cleanup first, as onnxruntime recommends: without the shapes the
        # quantizer leaves some tensors in float.
        prepared = os.path.join(tmp, "prepared.onnx")
        quant_pre_process(str(src), prepared, skip_symbolic_shape=True)
        quantize_static(
            prepared, str(dst), _Batches(calibration.astype(np.float32)),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )  # fmt: skip
    source, model = onnx.load(str(src)), onnx.load(str(dst))
    del model.metadata_props[:]
    for prop in source.metadata_props:
        model.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(model, str(dst))
