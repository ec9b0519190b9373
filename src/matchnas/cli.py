"""The ``matchnas`` command line: a thin layer over the library.

Every :class:`MatchnasError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from matchnas.errors import Interrupted, MatchnasError
from matchnas.space import SearchSpace
from matchnas.space_file import load_space

# Commands import what they need when they run: `matchnas predict` must work without PyTorch.

# What `matchnas --help` says first: plain text (the module docstring is reStructuredText).
DESCRIPTION = ("Turn a pre-trained MBConv CNN into a weight-sharing supernet, train it semi-supervised "
               "on sparse labels, pick a subnet for each device budget with no retraining, and export it.")


def at_least(minimum: int | float, kind=int):
    """An argparse type: a number of ``kind`` no smaller than ``minimum`` (refused before any work,
    as a one-line usage error with exit status 2)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not value >= minimum:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    return parse


COUNT = at_least(1)  # how many of something: configs, images, threads, runs, classes


class OneLineParser(argparse.ArgumentParser):
    """Usage errors on one line, like every other error (argparse prints the usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def describe_space(space: SearchSpace, num_classes: int, in_chans: int = 3) -> str:
    """The stages and choices, the number of configs, and min/max FLOPs and params per resolution."""
    from matchnas import cost
    from matchnas.search.budgets import format_cost

    lines = [f"space {space.name} (backbone {space.backbone}, digest {space.digest})"]
    lines.append(f"stem {space.stem_width} ch, head {space.head_width} ch, {num_classes} classes")
    lines.append(f"{'stage':>5} {'stride':>6} {'depth':>10} {'width':>12} {'kernel':>8} {'expand':>10}  choice")
    for i, s in enumerate(space.stages):
        kernels = sorted({k for ks in s.kernels for k in ks})
        expands = sorted({e for es in s.expands for e in es})
        per = "per block" if s.per_block else "per stage"
        lines.append(
            f"{i:>5} {s.stride:>6} {str(list(s.depths)):>10} {str(list(s.widths)):>12} "
            f"{str(kernels):>8} {str(expands):>10}  {per}"
        )
    lines.append(f"configs: {space.num_configs():,}")
    lines.append(f"{'res':>5} {'min FLOPs':>10} {'max FLOPs':>10} {'min params':>11} {'max params':>11}")
    lo, hi = space.min(), space.max()
    for r in space.resolutions:
        a, b = replace(lo, resolution=r), replace(hi, resolution=r)
        f = [cost.flops(space, c, num_classes, in_chans) for c in (a, b)]
        p = [cost.params(space, c, num_classes, in_chans) for c in (a, b)]
        f0, f1, p0, p1 = (format_cost(v, "flops") for v in (*f, *p))
        lines.append(f"{r:>5} {f0:>10} {f1:>10} {p0:>11} {p1:>11}")
    lines.append("FLOPs: 2 per multiply-add, convolutions and classifier, one image")
    return "\n".join(lines)


def _cmd_space(args: argparse.Namespace) -> None:
    from matchnas.convert import check_fits, get_backbone

    if args.backbone is not None:
        get_backbone(args.backbone)
    space = load_space(args.space or args.backbone or "efficientnet-lite0")
    # The checks `train` makes: a space it would refuse is refused here too.
    check_fits(space, get_backbone(args.backbone or space.backbone))
    print(describe_space(space, args.num_classes, args.in_chans))


def _cmd_train(args: argparse.Namespace) -> None:
    import os

    from matchnas.defaults import parse_duration
    from matchnas.experiment import load_experiment
    from matchnas.io import as_path, check_writable
    from matchnas.train import distributed
    from matchnas.run import read_experiment
    from matchnas.checkpoint import has_checkpoint
    from matchnas.train.loop import resume, train
    from matchnas.train.plan import make_plan

    if args.resume:
        if args.experiment or args.set or args.single is not None or args.data or args.time or args.dry_run:
            raise MatchnasError("--resume continues a run as it was configured: give no experiment, --set, --single, "
                                "--data, --time or --dry-run")
        experiment = read_experiment(args.resume)
    else:
        overrides = ([f"data.source={args.data}"] if args.data is not None else []) + list(args.set)
        overrides += [f"train.single={args.single}"] if args.single is not None else []
        experiment = load_experiment(args.experiment, overrides)
        budget = (parse_duration(args.time), args.time) if args.time is not None else None
        out = as_path(args.out, "--out")
        check_writable(out, "--out", folder=True)
        if has_checkpoint(out):
            raise MatchnasError(f"{out} already holds a run: resume it with --resume {out}")
    placement = distributed.setup(experiment.train.device)
    try:
        plan = None
        if not args.resume:
            plan = make_plan(experiment, args.out, placement.device, budget, timed=not placement.distributed)
            if placement.is_main:
                print(plan.describe(), flush=True)
            if args.dry_run:
                return
            experiment = plan.experiment
        results = resume(args.resume, placement) if args.resume else train(experiment, args.out, placement=placement, plan=plan)
    finally:
        distributed.teardown(placement)
    for name, top1 in results.items():
        print(f"{name}: top-1 {100 * top1:.2f}%")
    if placement.distributed:
        # gloo ranks sometimes crash in interpreter shutdown after the group is destroyed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _cmd_build(args: argparse.Namespace) -> None:
    from matchnas.build import build
    from matchnas.defaults import parse_duration

    budget = (parse_duration(args.time), args.time) if args.time is not None else None
    print(build(args.data_dir, args.out, args.budgets, metric=args.metric, strategy=args.strategy, formats=args.format,
                quantize=args.quantize, overrides=args.set, time_budget=budget))


def _cmd_eval(args: argparse.Namespace) -> None:
    from matchnas.run import open_run

    if args.subnet not in ("max", "min") and not Path(args.subnet).is_file():
        raise MatchnasError(f"--subnet {args.subnet}: no such file (give max, min or a config JSON)")
    run = open_run(args.run_dir)
    config = run.config(args.subnet if args.subnet in ("max", "min") else run.space.config_from_file(args.subnet, "--subnet"))
    top1 = run.top1(config)
    print(f"{args.subnet} ({config.id}): top-1 {100 * top1:.2f}% after BN recalibration")


def _cmd_demo(args: argparse.Namespace) -> None:
    from matchnas.demo import run_demo
    from matchnas.io import check_writable

    check_writable(args.out, "--out", folder=True)
    print(run_demo(Path(args.out), Path(args.experiment) if args.experiment else None))


def _cmd_search(args: argparse.Namespace) -> None:
    from matchnas.search.run import search

    options = {"candidates": args.candidates, "samples": args.samples, "population": args.population,
               "generations": args.generations, "agreement_images": args.agreement_images}
    print(search(args.run_dir, args.metric, args.budgets, args.strategy, args.val_dir, args.out, options))


def _cmd_proxies(args: argparse.Namespace) -> None:
    from matchnas.search.ranking import rank_proxies

    print(rank_proxies(args.run_dir, args.n, args.proxy or None))


def _cmd_latency(args: argparse.Namespace) -> None:
    from matchnas.latency import build_lut_command

    space = load_space(args.space or args.backbone)
    print(build_lut_command(space, args.num_classes, args.runtime, args.out, args.threads, args.quantize))


def _cmd_export(args: argparse.Namespace) -> None:
    from matchnas.export import export_run

    print(export_run(args.run_dir, args.out, formats=args.format, selections=args.selections, subnet=args.subnet,
                     force=args.force, tolerance=args.tolerance, parity_images=args.parity_images,
                     threads=args.threads, latency_runs=args.latency_runs, quantize=args.quantize,
                     int8_tolerance=args.int8_tolerance, calibration_images=args.calibration_images,
                     strict=args.strict, budget_tolerance=args.budget_tolerance))


def _cmd_predict(args: argparse.Namespace) -> None:
    from matchnas.predict import predict

    print(predict(args.model, args.images, top_k=args.top_k, budget=args.budget, resolution=args.resolution,
                  threads=args.threads, int8=args.int8, normalisation=args.normalisation))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="matchnas", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_space_command, _add_train_command, _add_build_command, _add_eval_command, _add_search_command,
                _add_proxies_command, _add_latency_command, _add_export_command, _add_predict_command, _add_demo_command):
        add(commands)  # in the order --help lists them
    return parser


def _add_space_command(commands) -> None:
    space = commands.add_parser("space", help="print a search space, its size and its cost range")
    space.add_argument("--backbone", help="pre-trained network (default: the space's, efficientnet-lite0 without --space)")
    space.add_argument("--space", help="a search-space YAML file or shipped space name (default: the backbone's)")
    space.add_argument("--num-classes", type=COUNT, default=1000, help="classifier outputs (default: %(default)s)")
    space.add_argument("--in-chans", type=int, default=3, choices=(1, 3), help="input channels")
    space.set_defaults(run=_cmd_space)


def _add_train_command(commands) -> None:
    train = commands.add_parser("train", help="train a supernet (or one subnet) semi-supervised")
    train.add_argument("experiment", nargs="?", help="experiment YAML (default: built-in defaults)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.steps=200")
    train.add_argument("--out", default="runs/latest", help="run directory (default: %(default)s)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR where it stopped")
    train.add_argument("--single", nargs="?", const="max", metavar="CONFIG.json",
                       help="train one fixed subnet (default: the maxnet) with the same losses")
    train.add_argument("--data", metavar="DIR", help="your images: DIR/labeled/<class>/, optional DIR/unlabeled/ "
                       "and DIR/test/<class>/ (the same as --set data.source=DIR)")
    train.add_argument("--time", metavar="DURATION", help="a time budget, e.g. 30m or 2h: the plan trains the steps "
                       "that fit it at the step time measured on this machine")
    train.add_argument("--dry-run", action="store_true", help="print the plan (data, settings and why, time) and exit")
    train.set_defaults(run=_cmd_train)


def _add_build_command(commands) -> None:
    build_command = commands.add_parser("build", help="a folder of images to a deployable bundle: plan, train, search, export")
    build_command.add_argument("data_dir", metavar="DIR", help="labeled/<class>/ images, optional unlabeled/ and test/<class>/")
    build_command.add_argument("--budgets", required=True, help="comma-separated, K/M/G suffixes allowed, e.g. 5M,10M,20M")
    build_command.add_argument("--out", required=True, help="the build folder: run/ (training, selections) and bundle/")
    build_command.add_argument("--metric", default="flops", help="as for search (default: %(default)s)")
    build_command.add_argument("--strategy", help="as for search")
    build_command.add_argument("--format", default="onnx", help="as for export (default: %(default)s)")
    build_command.add_argument("--quantize", help="int8: also export static int8 models")
    build_command.add_argument("--time", metavar="DURATION", help="a time budget for training, e.g. 30m")
    build_command.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a training setting, as for train")
    build_command.set_defaults(run=_cmd_build)


def _add_eval_command(commands) -> None:
    evaluate = commands.add_parser("eval", help="top-1 of a subnet of a trained run after BN recalibration")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--subnet", default="max", help="max, min or a config JSON file (default: %(default)s)")
    evaluate.set_defaults(run=_cmd_eval)


def _add_search_command(commands) -> None:
    search = commands.add_parser("search", help="pick a subnet for each budget, with no retraining")
    search.add_argument("run_dir")
    search.add_argument("--metric", default="flops", help="flops, params, memory[:int8], flash[:int8] (bytes: budgets like 256KB,1MB), latency or latency:LUT.json (default: %(default)s)")
    search.add_argument("--budgets", required=True, help="comma-separated, K/M/G suffixes allowed, e.g. 4M,8M,12M")
    search.add_argument("--strategy", help="fixed, zeroshot:PROXY, agreement[:kl], evolution or random (default: the one "
                        "docs/benchmarks.md measured closest to the best subnet under each budget; the output names it)")
    search.add_argument("--val-dir", help="a labelled folder (labeled/<class>/*, '/' in a class name written '_') for evolution/random; "
                        "without one they rank by agreement with the maxnet on unlabelled images")
    search.add_argument("--out", help="where selections.json and selections.png go (default: the run directory)")
    search.add_argument("--candidates", type=COUNT, help="zeroshot, agreement: random candidates scored (default: 1000, 300)")
    search.add_argument("--agreement-images", type=COUNT, default=2000,
                        help="unlabelled images the label-free score (agreement with the maxnet) uses (default: %(default)s)")
    search.add_argument("--samples", type=COUNT, default=20, help="random, agreement: random configs drawn under each budget (default: %(default)s)")
    search.add_argument("--population", type=at_least(2), default=30, help="evolution: population size (default: %(default)s)")
    search.add_argument("--generations", type=COUNT, default=10, help="evolution: generations (default: %(default)s)")
    search.set_defaults(run=_cmd_search)


def _add_proxies_command(commands) -> None:
    proxies = commands.add_parser("proxies", help="rank correlation of every zero-cost proxy with test accuracy")
    proxies.add_argument("run_dir")
    proxies.add_argument("--n", type=COUNT, default=50, help="random configs (default: %(default)s)")
    proxies.add_argument("--proxy", action="append", help="only this proxy (repeatable)")
    proxies.set_defaults(run=_cmd_proxies)


def _add_latency_command(commands) -> None:
    latency = commands.add_parser("latency", help="latency lookup tables")
    latency_commands = latency.add_subparsers(dest="latency_command", required=True)
    build = latency_commands.add_parser("build", help="time every distinct block shape of a space on this machine")
    build.add_argument("--runtime", default="onnxruntime", help="onnxruntime or torch (default: %(default)s)")
    build.add_argument("--out", required=True, help="the LUT JSON to write")
    build.add_argument("--backbone", default="efficientnet-lite0")
    build.add_argument("--space", help="a space YAML or shipped name (default: the backbone's)")
    build.add_argument("--num-classes", type=COUNT, default=10)
    build.add_argument("--threads", type=COUNT, help="intra-op threads for timing (default: the runtime's choice)")
    build.add_argument("--quantize", help="int8: time static int8 parts (onnxruntime QDQ), for int8 latency budgets")
    build.set_defaults(run=_cmd_latency)


def _add_export_command(commands) -> None:
    export = commands.add_parser("export", help="export selected subnets as standalone models with parity checks")
    export.add_argument("run_dir")
    export.add_argument("--out", required=True, help="the bundle folder to create")
    export.add_argument("--selections", help="selections.json from `matchnas search` (default: RUN_DIR/selections.json)")
    export.add_argument("--subnet", help="one config instead: max, min or a config JSON")
    export.add_argument("--format", default="onnx", help="onnx, executorch, litert or several: onnx,executorch,litert (default: %(default)s)")
    export.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    export.add_argument("--tolerance", type=at_least(0.0, float), help="max |logit difference| allowed in parity checks (default: 1e-3)")
    export.add_argument("--parity-images", type=COUNT, default=256, help="test images for parity checks (default: %(default)s)")
    export.add_argument("--threads", type=COUNT, default=1, help="runtime threads for latency timing (default: %(default)s)")
    export.add_argument("--latency-runs", type=COUNT, default=50, help="timed runs per model (default: %(default)s)")
    export.add_argument("--quantize", help="int8: also export each file as a static int8 model (calibrated, measured)")
    export.add_argument("--int8-tolerance", type=at_least(0.0, float), default=1.0, metavar="POINTS",
                        help="max test top-1 drop of an int8 file, in percentage points (default: %(default)s)")
    export.add_argument("--calibration-images", type=COUNT, help="int8 calibration images (default: train.recalibration_images)")
    export.add_argument("--budget-tolerance", type=at_least(0.0, float), default=0.1, metavar="FRACTION",
                        help="a file's measured cost may exceed its budget by this fraction (default: %(default)s)")
    export.add_argument("--strict", action="store_true", help="fail (nothing written) when a file misses its budget")
    export.set_defaults(run=_cmd_export)


def _add_predict_command(commands) -> None:
    predict = commands.add_parser("predict", help="classify images with an exported ONNX or .tflite model, or a bundle (no PyTorch needed)")
    predict.add_argument("model", help="a bundle folder (with manifest.json), an .onnx or a .tflite file")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--top-k", type=COUNT, default=5)
    predict.add_argument("--budget", help="which model of a bundle: a budget label, a number or a config id (default: the largest)")
    predict.add_argument("--resolution", type=COUNT, help="input size for a bare .onnx with a dynamic shape")
    predict.add_argument("--threads", type=COUNT)
    predict.add_argument("--int8", action="store_true", help="run the bundle's int8 ONNX model (export --quantize int8)")
    predict.add_argument("--normalisation", choices=("lite", "imagenet"),
                         help="input normalisation of a model file that records none (a bare .tflite, an .onnx not from matchnas): "
                         "lite = (x - 127) / 128, imagenet = ImageNet mean/std")
    predict.set_defaults(run=_cmd_predict)


def _add_demo_command(commands) -> None:
    demo = commands.add_parser("demo", help="the end-to-end demo on the embedded digits data")
    demo.add_argument("--out", default="runs/demo", help="folder for the demo's runs (default: %(default)s)")
    demo.add_argument("--experiment", help="experiment YAML (default: the shipped digits demo)")
    demo.set_defaults(run=_cmd_demo)


def main(argv: list[str] | None = None) -> int:
    from matchnas.io import environment_error
    from matchnas.train.interrupt import Terminated, raise_on_sigterm

    args = build_parser().parse_args(argv)
    try:
        with raise_on_sigterm():  # a scheduler's stop unwinds like Ctrl-C: temps go, exit 143
            args.run(args)
    except MatchnasError as err:
        kind = "" if isinstance(err, Interrupted) else "error: "
        print(f"matchnas: {kind}{err}", file=sys.stderr)
        return err.exit_status
    except OSError as err:  # met in a library reading or writing for us: another user's file, a full disk
        message = environment_error(err)
        if message is None:
            raise
        print(f"matchnas: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # outside the training loop, which stops more gracefully
        how, status = ("terminated (SIGTERM)", 143) if isinstance(err, Terminated) else ("interrupted (Ctrl-C)", 130)
        print(f"matchnas: {how}; nothing half-written was kept", file=sys.stderr)
        return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
