"""Supernet forward+backward time for a config vs the same subnet extracted as a static module.

Usage: python bench/supernet_overhead.py [--batch 64] [--resolution 32] [--random 3] [--repeats 20]

Prints a Markdown table: per config, median ms per step for the supernet and for the extracted
module (both channels-last, train mode, SGD-free: forward + backward only) and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import numpy as np
import torch

from matchnas import cost
from matchnas.convert import from_pretrained


def _time(step, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--random", type=int, default=3, help="number of random configs")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    net = from_pretrained("efficientnet-lite0", num_classes=10).train().to(memory_format=torch.channels_last)
    space = net.space
    rng = np.random.default_rng(0)
    configs = [("max", space.max()), ("min", space.min())]
    configs += [(f"random {i}", space.sample(rng)) for i in range(args.random)]
    x = torch.randn(args.batch, 3, args.resolution, args.resolution).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    loss_fn = torch.nn.CrossEntropyLoss()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.resolution} px, channels-last")
    print("| config | MFLOPs | supernet ms | extracted ms | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, config in configs:
        config = replace(config, resolution=args.resolution)
        static = net.extract(config).train().to(memory_format=torch.channels_last)

        def super_step():
            net.zero_grad(set_to_none=True)
            loss_fn(net(x, config), y).backward()

        def static_step():
            static.zero_grad(set_to_none=True)
            loss_fn(static(x), y).backward()

        # Interleave the two measurements so drift in machine load hits both alike.
        t_super, t_static = [], []
        for _ in range(3):
            t_super.append(_time(super_step, args.repeats // 3 + 1))
            t_static.append(_time(static_step, args.repeats // 3 + 1))
        a, b = statistics.median(t_super), statistics.median(t_static)
        mflops = cost.flops(space, config, 10) / 1e6
        print(f"| {name} | {mflops:.2f} | {a:.1f} | {b:.1f} | {a / b:.3f} |")


if __name__ == "__main__":
    main()
