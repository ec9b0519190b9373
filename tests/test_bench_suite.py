"""The benchmark suite's named protocols are shorthands: the same runs and results as the flags."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def suite(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.chdir(BENCH.parent)  # parse_mode changes directory; monkeypatch restores it
    import suite as module

    def parse(*argv):
        monkeypatch.setattr(sys, "argv", ["script", *argv])
        return module.parse_mode("test")[1]

    return module, parse


def test_protocol_64px_is_the_same_variant_as_its_flags(suite):
    module, parse = suite
    named = parse("--protocol", "64px", "--device", "cuda")
    spelled = parse("--set", "data.image_size=64", "--set", "model.space=spaces/efficientnet-lite0-32to64.yaml",
                    "--steps", "2000", "--device", "cuda")
    assert named == spelled
    assert named.folder == ("full+data.image_size=64+model.space=spaces_efficientnet-lite0-32to64.yaml"
                            "+train.steps=2000+train.device=cuda")


def test_protocol_defaults_and_explicit_steps(suite):
    module, parse = suite
    assert parse().folder == "full" and parse().steps == 1000
    assert parse("--protocol", "64px", "--steps", "500").steps == 500


def test_every_protocol_space_file_loads_from_any_directory(suite):
    module, parse = suite
    from matchnas.space_file import load_space

    for name in module.PROTOCOLS:
        mode = parse("--protocol", name)
        experiment = module.experiment_for([], mode, 0)  # resolves paths from bench/
        space = load_space(experiment.model.space or experiment.model.backbone)
        assert max(space.resolutions) == experiment.data.image_size


def test_plot_names_are_short_and_results_keep_the_flag_string(suite):
    module, parse = suite
    named = parse("--protocol", "64px")
    assert module.plot_path("fmnist_table3", named).name == "table3-64px.png"
    assert module.plot_path("fmnist_table3-abd", parse()).name == "table3-abd-32px.png"
    assert module.plot_path("gm_split", parse("--steps", "2000")).name == "gm-split-32px-2000steps.png"
    # the cached runs and result files are still selected by the flag string
    assert module.run_path("supernet-full", named, 0).parent.name == named.folder
    assert named.folder.startswith("full+data.image_size=64")
    # a variant with no label keeps its flags in the plot's name: no two variants share a plot
    assert module.plot_path("fmnist_table4", parse("--set", "train.tau=0.8")).name == "table4-full+train.tau=0.8.png"
