"""``matchnas build DIR --budgets 5M,10M,20M --out B``: a folder of images to a deployable bundle in
one command: plan and train (``B/run``), pick a subnet per budget (``B/run/selections.json``),
export each pick with parity checks (``B/bundle``).

Each stage is what its own command does (``matchnas train --data DIR --out B/run``, ``matchnas
search B/run``, ``matchnas export B/run --out B/bundle``), and each resumes: a finished stage is
reused, an interrupted run continues from its last checkpoint, and a search or export made for
other budgets, metric, strategy or formats is made again.
"""

from __future__ import annotations

from pathlib import Path

from matchnas.errors import MatchnasError
from matchnas.experiment import load_experiment
from matchnas.io import atomic_write_json, check_writable, read_json


def build(data_dir: str, out: str | Path, budgets: str, metric: str = "flops", strategy: str | None = None,
          formats: str = "onnx", quantize: str | None = None, overrides: list[str] = (),
          time_budget: tuple[float, str] | None = None, echo=print) -> str:
    """Run the three stages; returns the export's summary table."""
    from matchnas.export.formats import parse_formats
    from matchnas.export.quantize import parse_quantize
    from matchnas.search.budgets import parse_budgets
    from matchnas.search.run import check_options
    from matchnas.search.strategies import DEFAULT_STRATEGY

    if not Path(data_dir).is_dir():
        raise MatchnasError(f"{data_dir}: not a folder (the data must be a folder with labeled/<class>/ images)")
    budget_values = parse_budgets(budgets)
    strategy = strategy or DEFAULT_STRATEGY
    check_options(strategy, metric, None)
    format_list, quantize = parse_formats(formats), parse_quantize(quantize)
    check_writable(out, "--out", folder=True)
    out = Path(out)
    experiment = load_experiment(None, [f"data.source={data_dir}", *overrides])

    from matchnas.export import export_run
    from matchnas.export.manifest import sha256
    from matchnas.search.run import search
    from matchnas.train.plan import train_planned

    run_dir, bundle = out / "run", out / "bundle"
    echo("== train")
    results = train_planned(experiment, run_dir, time_budget, echo)
    echo("  ".join(f"{name}: top-1 {100 * top1:.2f}%" for name, top1 in results.items()))
    echo("== search")
    selections = run_dir / "selections.json"
    if _current(selections, {"metric": metric, "strategy": strategy}, budget_values):
        echo(f"{selections}: made for these budgets already; reused")
    else:
        echo(search(run_dir, metric, budgets, strategy))
    echo("== export")
    # what the bundle was exported from, stamped once the export has finished
    stamp, wanted = out / "exported.json", {"selections_sha256": sha256(selections), "formats": sorted(format_list),
                                            "quantize": quantize}
    if (bundle / "manifest.json").exists() and stamp.exists() and read_json(stamp, "the build's export stamp") == wanted:
        return f"{bundle}: exported from these selections already; reused"
    summary = export_run(run_dir, bundle, formats=format_list, selections=selections, force=True, quantize=quantize)
    atomic_write_json(stamp, wanted)
    return summary


def _current(selections: Path, settings: dict, budgets: list[float]) -> bool:
    """Whether ``selections`` answers exactly these budgets with these settings."""
    if not selections.exists():
        return False
    body = read_json(selections, "selections")
    return (all(body.get(k) == v for k, v in settings.items())
            and [p["budget"] for p in body.get("picks", [])] == budgets)
