"""Static int8 quantization of an exported ONNX file with onnxruntime (QDQ format), checked and
timed in onnxruntime like the float32 file.

QDQ keeps the float graph and wraps tensors in QuantizeLinear/DequantizeLinear pairs; onnxruntime's
graph optimiser then fuses each ``DQ -> Conv -> Q`` into an int8 ``QLinearConv`` (and Clip/ReLU
into the ranges before it), so the same file is portable and fast. Weights are int8 per output
channel (symmetric), activations uint8 per tensor with MinMax ranges from the calibration images.
The explicit ``Pad`` of TensorFlow "same" padding gets QDQ on both sides; it pads with the zero
point, which is exactly 0.0 in float.
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


def quantize_onnx(net, float_path: Path, path: Path, calibration: np.ndarray, test: np.ndarray,
                  threads: int, runs: int) -> tuple[dict, np.ndarray]:
    """Quantize ``float_path`` (``net`` exported) into ``path``; return its record (format, latency) and its logits on
    ``test`` (model-ready images) for the accuracy numbers :mod:`~matchnas.export.quantize` adds."""
    import onnxruntime as ort

    from matchnas.export.parity import time_calls

    quantize_onnx_file(float_path, path, calibration)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    logits = np.concatenate([session.run(None, {"images": test[i : i + 256]})[0] for i in range(0, len(test), 256)])
    one = test[:1]
    latency = time_calls(lambda: session.run(None, {"images": one}), runs)
    record = {
        "format": "onnx",
        "precision": "int8",
        "quantization": QUANT_SETTINGS,
        "input_shape": ["batch", *map(int, test.shape[1:])],
        "batch": "any",
        "latency": {**latency, "runtime": f"onnxruntime {ort.__version__}", "provider": "CPUExecutionProvider",
                    "intra_op_num_threads": threads, "inter_op_num_threads": 1},
    }
    return record, logits
