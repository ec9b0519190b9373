"""The end-to-end demo on a 4-step version of its experiment: three runs, the fixed rule's picks on
the accuracy-cost cloud, the ONNX bundle and a prediction."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import yaml

from matchnas.demo import run_demo

pytestmark = pytest.mark.slow


def test_demo_places_the_picks_on_the_accuracy_cost_cloud(tmp_path):
    experiment = yaml.safe_load((resources.files("matchnas") / "configs" / "demo-digits.yaml").read_text())
    experiment["train"].update(steps=4, checkpoint_every=2)
    experiment["train"]["recalibration_images"] = 64
    path = tmp_path / "tiny-demo.yaml"
    path.write_text(yaml.safe_dump(experiment))

    report = run_demo(tmp_path / "demo", path, cloud_size=3)

    picks = json.loads((tmp_path / "demo" / "supernet" / "selections.json").read_text())["picks"]
    assert len(picks) == 3 and all(p["config"] for p in picks)
    assert "5 subnets of the supernet (maxnet, minnet, 3 random)" in report
    assert "Spearman rho of FLOPs with top-1" in report
    assert (tmp_path / "demo" / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "demo").glob(".demo.png.*"))  # no temp file left behind
    manifest = json.loads((tmp_path / "demo" / "bundle" / "manifest.json").read_text())
    assert [m["budget"] for m in manifest["models"]] == [p["budget"] for p in picks]
