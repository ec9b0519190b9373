"""The converted MobileNetV3-Large maxnet against geffnet's implementation.

Usage: python bench/mobilenetv3_fidelity.py   (needs `pip install --no-deps geffnet`)

geffnet's ``mobilenetv3_large_100`` (timm's key names) with random weights and randomised BN
statistics is saved as a weights file, converted into the once-for-all MobileNetV3 space (its
maxnet is deeper, wider and has larger kernels than the checkpoint; the additions are neutral),
and both run on the same random batch: max |difference| of the logits, absolute and relative to
the largest logit, in float32 and float64, at 224 and 160 px.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

import geffnet
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import randomize_batch_norms  # noqa: E402

from matchnas.convert import from_pretrained  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    reference = geffnet.mobilenetv3_large_100()
    randomize_batch_norms(reference, torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mobilenetv3_large_100.pth"
        torch.save(reference.state_dict(), path)
        net = from_pretrained("mobilenetv3-large-100", weights=str(path)).eval()
    reference.eval()
    print("| resolution | dtype | max abs diff | relative to max logit |")
    print("|---:|---|---:|---:|")
    for resolution in (224, 160):
        config = dataclasses.replace(net.space.max(), resolution=resolution)
        x = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(resolution))
        for dtype in (torch.float32, torch.float64):
            with torch.no_grad():
                expected, got = reference.to(dtype)(x.to(dtype)), net.to(dtype)(x.to(dtype), config)
            diff = (got - expected).abs().max().item()
            print(f"| {resolution} | {str(dtype)[6:]} | {diff:.1e} | {diff / expected.abs().max().item():.1e} |")


if __name__ == "__main__":
    main()
