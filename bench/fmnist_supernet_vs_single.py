"""The supernet's subnets (one lever-screen run, no retraining) against the
same architectures trained alone, for the same steps, at the minnet, the maxnet and architectures
between them.

Usage: python bench/fmnist_supernet_vs_single.py --row "teacher_warmup=0.2+student_ramp=0.2"
       [--seeds 0 1] [--quantiles 0.25 0.5 0.75] [--losses fm sup]

The architectures between are the FLOPs quantiles of 201 seeded samples of the Lite0 space at
the space's middle resolution, 28 px (56 px with ``--set model.space=efficientnet-lite0-64``); the
0.5 quantile is the lever screen's "mid" subnet. Single runs are the suite's cached
ones: ``single-max-fm`` / ``single-min-fm`` (Table 3's rows) and ``single-<config id>-fm``
(shared with the accuracy-vs-FLOPs study).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from fmnist_levers import ROWS, SUPERNET, run_name
from suite import Evaluator, config_file, ensure_run, eval_results, experiment_for, parse_mode, plot_path, write_results

from matchnas import cost
from matchnas.space import SearchSpace, SubnetConfig
from matchnas.space_file import load_space


def architectures(space: SearchSpace, quantiles: list[float], samples: int = 201) -> list[tuple[str, SubnetConfig]]:
    """``(label, config)``: ``space``'s minnet, the quantile configs (ascending FLOPs), its maxnet.
    The quantiles are ranked in the shipped Lite0 space at 32 px and evaluated at ``space``'s
    middle resolution, as the lever screen's "mid" (the 64 px protocol: the same stages at 56 px)."""
    reference = load_space("efficientnet-lite0")
    rng = np.random.default_rng([0, 0x31D])  # the lever screen's draw, so 0.5 is its "mid"
    configs = [dataclasses.replace(reference.sample(rng), resolution=32) for _ in range(samples)]
    configs.sort(key=lambda c: (cost.flops(reference, c, 10), c.id))
    middle = space.resolutions[len(space.resolutions) // 2]
    between = [(f"q{q:g}", dataclasses.replace(configs[round(q * (samples - 1))], resolution=middle)) for q in quantiles]
    return [("minnet", space.min()), *between, ("maxnet", space.max())]


def single_top1(label: str, config: SubnetConfig, loss: str, mode, seed: int) -> float:
    if label in ("minnet", "maxnet"):
        net = label[:3]
        run = ensure_run(f"single-{net}-{loss}", [f"train.single={net}", f"train.loss={loss}"], mode, seed)
    else:
        path = config_file(config, mode)
        run = ensure_run(f"single-{config.id}-{loss}", [f"train.single={path}", f"train.loss={loss}"], mode, seed)
    return eval_results(run)["single"]


def main() -> None:
    def options(parser):
        parser.add_argument("--row", default="teacher_warmup=0.2+student_ramp=0.2", choices=list(ROWS))
        parser.add_argument("--quantiles", type=float, nargs="+", default=[0.25, 0.5, 0.75])
        parser.add_argument("--losses", nargs="+", default=["fm"], choices=["fm", "sup"])

    args, mode = parse_mode(__doc__.splitlines()[0], options)
    model = experiment_for([*SUPERNET, *ROWS[args.row]], mode, mode.seeds[0]).model
    space = load_space(model.space or model.backbone)
    archs = architectures(space, args.quantiles)
    points = []
    for seed in mode.seeds:
        # the single models first: another script may be training the supernet run meanwhile
        singles = {(label, loss): single_top1(label, config, loss, mode, seed) for label, config in archs for loss in args.losses}
        run = Evaluator(ensure_run(run_name(args.row), [*SUPERNET, *ROWS[args.row]], mode, seed))
        for label, config in archs:
            point = {"seed": seed, "label": label, "config_id": config.id, "config": config.to_dict(),
                     "mflops": cost.flops(space, config, 10) / 1e6, "supernet": run.top1(config, "test"),
                     **{f"single_{loss}": singles[label, loss] for loss in args.losses}}
            points.append(point)
            print(point["label"], seed, {k: v for k, v in point.items() if k not in ("config", "label", "seed")}, flush=True)

    header = "| architecture | MFLOPs | supernet % | " + " | ".join(f"single {loss} %" for loss in args.losses)
    lines = [header + " | supernet - single fm |", "|---|---:|---:|" + "---:|" * len(args.losses) + "---:|"]
    for label, config in archs:
        rows = [p for p in points if p["label"] == label]

        def mean(key):
            return 100 * sum(p[key] for p in rows) / len(rows)

        singles = " | ".join(f"{mean(f'single_{loss}'):.1f}" for loss in args.losses)
        gap = mean("supernet") - mean("single_fm") if "fm" in args.losses else float("nan")
        lines.append(f"| {label} ({config.id}) | {rows[0]['mflops']:.2f} | {mean('supernet'):.1f} | {singles} | {gap:+.1f} |")
    table = f"{args.row}, {mode.steps} steps, seeds {list(mode.seeds)} (means)\n\n" + "\n".join(lines)
    print(table)
    script = "fmnist_supernet_vs_single-" + run_name(args.row)
    print(f"wrote {write_results(script, mode, {'row': args.row, 'points': points, 'table': table})}")
    print(f"wrote {plot_curve(points, plot_path('fmnist_supernet_vs_single', mode), mode)}")


def plot_curve(points: list[dict], path, mode) -> str:
    """Test top-1 against MFLOPs: the supernet's subnets (one training) and the same architectures
    each trained alone with FixMatch (one training per device), means over the seeds."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({p["label"] for p in points}, key=lambda label: next(p["mflops"] for p in points if p["label"] == label))

    def mean(label, key):
        rows = [p[key] for p in points if p["label"] == label]
        return 100 * sum(rows) / len(rows)

    mflops = [next(p["mflops"] for p in points if p["label"] == label) for label in labels]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(mflops, [mean(label, "supernet") for label in labels], "o-", label="one supernet, subnets taken with no retraining")
    ax.plot(mflops, [mean(label, "single_fm") for label in labels], "s--", label="each architecture trained alone (FixMatch)")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([3, 5, 10, 20, 40, 70]))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("MFLOPs (log scale)")
    ax.set_ylabel("test top-1 %")
    ax.set_title(f"Fashion-MNIST, 400 labels, {mode.steps} steps, seeds {sorted({p['seed'] for p in points})}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


if __name__ == "__main__":
    main()
