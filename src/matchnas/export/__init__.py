"""``matchnas export``: each selected subnet as a standalone model file, verified in its own runtime.

For every subnet (the picks of a ``selections.json``, or one ``--subnet`` config) the export
1. extracts the static subnet and re-calibrates its BN exactly as :meth:`matchnas.run.Run.top1`
   does (same images, same seed), so the exported model *is* the model whose test
   top-1 is reported; the supernet is never exported;
2. writes one file per format: ONNX (opset 17, any batch size; the bundle's metadata is embedded
   in the file too), ExecuTorch ``.pte`` lowered to XNNPACK or LiteRT ``.tflite`` (litert-torch;
   batch size fixed at 1 for both);
3. runs the file in its own runtime (onnxruntime; the ExecuTorch runtime; the LiteRT interpreter)
   on real held-out images
   and compares its logits with the PyTorch subnet's: max absolute difference and top-1
   agreement. Above the tolerance the export fails, naming the model and the numbers;
4. times the file in that runtime (batch 1, median after warm-up, a fixed thread count).

With ``quantize="int8"`` each file is also written as a static int8 model, its top-1, drop from
float32, agreement, latency and size measured and its drop held to a tolerance
(:mod:`~matchnas.export.quantize`).

The bundle is built in a hidden folder next to ``out_dir`` and renamed into place at the end, so
a failed export leaves nothing behind and ``force`` replaces an old bundle only once the new one is
complete.

Tolerances (max |logit difference|, float32): 1e-3 for every format, overridable. Measured on
this machine (onnxruntime 1.31, ExecuTorch 1.5.1): ONNX 1.1e-5 (224 px max subnet) and 2.8e-5
(160 px min subnet) on pre-trained Lite0 with 1000 classes; up to 3.1e-4 over 12 configs of a
2-step digits run, where float32 PyTorch itself is up to 1.8e-4 away from float64 on the same
subnet (the runtimes fold BN into the convolutions and sum in another order). XNNPACK: 1.2e-5 /
5.5e-5 on Lite0, 5.6e-5 / 1.7e-4 on the digits run. 1e-4 would fail correct exports, while real
faults are far above 1e-3: on Lite0 (160 px min subnet) BN eps 1e-5 instead of 1e-3 moves logits
by 2.4, BN left in training mode by 24, even a 127.5-for-128 input scale by 1e-2. LiteRT
(ai-edge-litert 2.3, XNNPACK): 9.5e-7 / 4.0e-7 on random-weight Lite0 and MobileNetV3 subnets at
32 px (8e-7 / 2e-6 of their largest logit), 2.7e-4 on a 2-step digits run's max subnet (6e-5 of
its largest logit, where ONNX is 1.5e-4 and XNNPACK 7.0e-4).

Files: :mod:`~matchnas.export.bundle` (the command: targets in, a complete bundle folder out),
:mod:`~matchnas.export.targets` (which configs: selections or ``--subnet``),
:mod:`~matchnas.export.formats` (the format registry), :mod:`~matchnas.export.onnx_format`,
:mod:`~matchnas.export.executorch_format` and :mod:`~matchnas.export.litert_format` (one exporter
each), :mod:`~matchnas.export.quantize`, :mod:`~matchnas.export.quantize_onnx`,
:mod:`~matchnas.export.quantize_executorch` and :mod:`~matchnas.export.quantize_litert` (int8),
:mod:`~matchnas.export.parity`
(parity checks and timing a file), :mod:`~matchnas.export.manifest` (the manifest's entries).
"""

from matchnas.export.bundle import export_run
from matchnas.export.executorch_format import EXECUTORCH_MODULES, INSTALL_HINT
from matchnas.export.formats import FORMATS, SUFFIX, TOLERANCE, parse_formats
from matchnas.export.manifest import MANIFEST_VERSION, sha256

__all__ = [
    "EXECUTORCH_MODULES", "FORMATS", "INSTALL_HINT", "MANIFEST_VERSION", "SUFFIX", "TOLERANCE", "export_run",
    "parse_formats", "sha256",
]  # fmt: skip
