"""Static int8 quantization of an exported ONNX file with onnxruntime (QDQ format, see
:mod:`matchnas.onnx_int8`), checked and timed in onnxruntime like the float32 file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from matchnas.onnx_int8 import QUANT_SETTINGS, quantize_onnx_file


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
