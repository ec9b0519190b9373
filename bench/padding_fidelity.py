"""How much of the pre-trained network survives symmetric padding.

Usage: python bench/padding_fidelity.py [--crops 16] [--resolutions 224 64 32 24]

The converted EfficientNet-Lite0 maxnet with its 1000-class head, once with the padding it was
trained with (TensorFlow "same") and once with the same weights and ``k // 2`` padding (what
matchnas did before): top-1 agreement and mean cosine similarity of the logits on ``--crops``
random crops of the test photo, resized to each resolution. Also checks that the "same" maxnet
equals the independent implementation (efficientnet-lite-pytorch, its own padding) at each size.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from matchnas.convert import BACKBONES, from_pretrained
from matchnas.nn import Supernet
from matchnas.space_file import load_space, space_from_dict

PHOTO = "tests/fixtures/chelsea-224.jpg"


def crops(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` random square crops (half to all of the side) of the photo, 224 px, normalised."""
    pixels = torch.from_numpy(np.array(Image.open(PHOTO).convert("RGB"))).permute(2, 0, 1).float()
    x = (pixels - 127.0) / 128.0
    rng = np.random.default_rng(seed)
    out = []
    side = x.shape[-1]
    for _ in range(n):
        s = int(rng.integers(side // 2, side + 1))
        top, left = (int(rng.integers(0, side - s + 1)) for _ in range(2))
        out.append(F.interpolate(x[None, :, top : top + s, left : left + s], size=224, mode="bilinear", antialias=True))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=16)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[224, 64, 32, 24])
    args = parser.parse_args()
    from efficientnet_lite_pytorch import EfficientNet

    images = crops(args.crops)
    print("| input | top-1 agreement, same vs k // 2 | mean cosine of the logits | max |ours - reference| / max |logit| |")
    print("|---|---:|---:|---:|")
    for r in args.resolutions:
        data = load_space("efficientnet-lite0").to_dict()
        data["resolutions"] = [r]
        space = space_from_dict(data)
        same = from_pretrained("efficientnet-lite0", space=space).eval()
        symmetric = Supernet(dataclasses.replace(space, padding="symmetric"), 1000, bn_eps=BACKBONES["efficientnet-lite0"].bn_eps).eval()
        symmetric.load_state_dict(same.state_dict())
        reference = EfficientNet.from_name("efficientnet-lite0", image_size=r)
        reference.load_state_dict(BACKBONES["efficientnet-lite0"].load_state_dict())
        x = F.interpolate(images, size=r, mode="bilinear", antialias=True)
        with torch.no_grad():
            a, b, ref = same(x, space.max()), symmetric(x, space.max()), reference.eval()(x)
        agree = (a.argmax(1) == b.argmax(1)).float().mean().item()
        cosine = F.cosine_similarity(a, b, dim=1).mean().item()
        error = ((a - ref).abs().max() / ref.abs().max()).item()
        print(f"| {r} px | {agree:.2f} | {cosine:.2f} | {error:.1e} |")


if __name__ == "__main__":
    main()
