#!/usr/bin/env bash
# Set up matchnas on a fresh machine and run the end-to-end demo on the embedded digits data:
# convert EfficientNet-Lite0, train a semi-supervised supernet from 40 labels, and compare its
# maxnet and minnet with labels-only single models, pick subnets for three FLOPs budgets, export
# them to an ONNX bundle and classify a test image with it. About 5 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install --quiet --disable-pip-version-check torch==2.13.0  # first: a bare torch pulls CUDA
python -m pip install --quiet --disable-pip-version-check -e .
python -m matchnas demo --out runs/demo
