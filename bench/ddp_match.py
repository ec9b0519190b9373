"""One optimizer step of 2 gloo ranks vs 1 process on the same global batch, with and without
SyncBatchNorm: ||update_1proc - update_2proc|| / ||update_1proc||.

Usage: python bench/ddp_match.py
"""

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from matchnas.experiment import load_experiment  # noqa: E402
from matchnas.checkpoint import FINAL  # noqa: E402
from matchnas.train.loop import build_supernet  # noqa: E402
from tests.test_distributed import STEPS, TINY, _train, _update_distance  # noqa: E402

for sync in ("true", "false"):
    settings = [f"train.sync_bn={sync}", "model.dropout=0", "train.steps=1", "train.warmup_steps=1"]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        _train(d / "one", 1, settings)
        _train(d / "two", 2, settings)
        one = torch.load(d / "one" / FINAL, weights_only=True)["model"]
        two = torch.load(d / "two" / FINAL, weights_only=True)["model"]
        before = build_supernet(load_experiment(None, TINY + STEPS + settings), num_classes=10).state_dict()
        print(f"sync_bn={sync}: relative update difference {_update_distance(before, one, two):.2e}")
