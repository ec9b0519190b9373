"""Input normalisation is the backbone's, recorded once and used everywhere: a MobileNetV3 run
trains, evaluates, exports and predicts with ImageNet mean/std; EfficientNet-Lite keeps 127/128."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from matchnas import cost
from matchnas.backbones import BACKBONES, IMAGENET_MEAN, IMAGENET_STD
from matchnas.checkpoint import FINAL, load_checkpoint
from matchnas.data import LITE_NORMALISATION, Normalisation
from matchnas.errors import MatchnasError
from matchnas.evaluate import accuracy, calibrated_subnet
from matchnas.experiment import load_experiment
from matchnas.export import export_run
from matchnas.predict import classify, load_model, preprocess_image
from matchnas.proxies import get_proxy, proxy_input
from matchnas.run import open_run
from matchnas.search.run import build_context, search
from matchnas.space import SubnetConfig
from matchnas.train import loop

from .conftest import randomize_batch_norms

IMAGENET = Normalisation(IMAGENET_MEAN, IMAGENET_STD)


@pytest.fixture(scope="module")
def mbv3_run(tmp_path_factory):
    """A 2-step digits run of the small-image MobileNetV3 space from a random-weights timm file."""
    geffnet = pytest.importorskip("geffnet")  # timm's key names in plain PyTorch (pip install --no-deps)
    root = tmp_path_factory.mktemp("mbv3-run")
    torch.manual_seed(0)
    reference = geffnet.mobilenetv3_large_100()
    randomize_batch_norms(reference, torch.Generator().manual_seed(1))
    weights = root / "mobilenetv3_large_100.pth"
    torch.save(reference.state_dict(), weights)
    overrides = ["model.backbone=mobilenetv3-large-100", "model.space=mobilenetv3-large-100-32",
                 f"model.weights={weights}", "train.batch_size=8", "train.warmup_steps=1", "train.steps=2",
                 "train.recalibration_images=32", "data.image_size=32", "data.labels_per_class=2", "data.max_unlabeled=64"]
    results = loop.train(load_experiment(None, overrides), root / "run")
    return root / "run", results


def test_a_mobilenetv3_run_records_imagenet_normalisation(mbv3_run):
    run_dir, results = mbv3_run
    assert results and all(0.0 <= v <= 1.0 for v in results.values())  # the final evaluation ran
    assert load_checkpoint(run_dir / FINAL)["normalisation"] == IMAGENET.to_record()
    run = open_run(run_dir)
    assert run.normalisation == IMAGENET == BACKBONES["mobilenetv3-large-100"].normalisation
    assert run.data.normalisation is run.normalisation  # one place everyone reads it from


def test_a_mobilenetv3_bundle_predicts_as_the_pytorch_subnet(mbv3_run, tmp_path):
    run_dir, _ = mbv3_run
    run = open_run(run_dir)
    config = dataclasses.replace(run.space.min(), resolution=32)  # = image_size: no resize in either path
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.to_dict()))
    out = tmp_path / "bundle"
    export_run(run_dir, out, "onnx", subnet=config_file, parity_images=16, latency_runs=2)
    [entry] = json.loads((out / "manifest.json").read_text())["models"]
    mean, std = [v * 255 for v in (0.485, 0.456, 0.406)], [v * 255 for v in (0.229, 0.224, 0.225)]
    assert entry["preprocess"]["mean"] == pytest.approx(mean) and entry["preprocess"]["std"] == pytest.approx(std)
    assert entry["normalisation"] == {"mean": entry["preprocess"]["mean"], "std": entry["preprocess"]["std"],
                                      "scale": "0..255"}

    image = run.data.source.test.images[:1]  # grey, 32 px: repeated to RGB, then per-channel
    png = tmp_path / "digit.png"
    Image.fromarray(image[0, 0].numpy()).save(png)
    x = preprocess_image(png, entry["preprocess"])
    expected_x = run.normalisation(image, size=32)
    assert not torch.equal(expected_x[0, 0], expected_x[0, 2])  # the channels really differ
    np.testing.assert_array_equal(x, expected_x.numpy())
    model = load_model(out)
    logits = model.session.run(None, {model.session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        expected = run.subnet(config)(expected_x)
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4 * float(expected.abs().max()) + 1e-5)
    [top] = classify(model, [png], top_k=3)
    probs = torch.softmax(expected[0].double(), 0)
    assert top[0][0] == str(int(expected.argmax()))
    for label, p in top:
        assert abs(p - float(probs[int(label)])) < 1e-3


def test_lite_keeps_127_128_and_old_scalar_manifests_mean_the_same(tmp_path):
    assert BACKBONES["efficientnet-lite0"].normalisation == LITE_NORMALISATION == Normalisation.from_record(None)
    assert LITE_NORMALISATION.manifest_values() == (127.0, 128.0)  # what Lite manifests say
    png = tmp_path / "rgb.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(png)
    spec = {"color": "rgb", "fit_size": 20, "resolution": 16, "channels": 3}
    scalar = preprocess_image(png, {**spec, "mean": 127.0, "std": 128.0})
    lists = preprocess_image(png, {**spec, "mean": [127.0] * 3, "std": [128.0] * 3})
    np.testing.assert_array_equal(scalar, lists)


def test_bad_normalisation_record_is_a_one_line_error():
    with pytest.raises(MatchnasError, match="needs 3 means and 3 positive stds"):
        Normalisation.from_record({"mean": [1.0, 2.0], "std": [1.0, 1.0]})
    with pytest.raises(MatchnasError, match="bad normalisation record"):
        Normalisation.from_record({"mean": 127.0})


def test_a_mobilenetv3_run_evaluated_searched_and_exported_without_naming_its_normalisation(mbv3_run, tmp_path):
    """No call below names a normalisation: the run carries ImageNet's, and every top-1 (eval,
    search's picks, the export's manifest) and proxy score equals the one measured with
    ImageNet's normalisation passed explicitly."""
    run_dir, _ = mbv3_run
    run = open_run(run_dir)
    t = run.experiment.train

    def explicit_top1(config):
        net = calibrated_subnet(run.supernet, config, run.data.recalibration_pool, t.recalibration_images, t.seed,
                                run.data.flip, normalisation=IMAGENET)
        return accuracy(net, run.data.source.test, config.resolution, normalisation=IMAGENET)

    for config in (run.space.min(), run.space.max()):  # evaluated (matchnas eval)
        assert run.top1(config) == explicit_top1(config)

    space, k = run.space, run.supernet.num_classes
    budgets = ",".join(str(cost.flops(space, c, k)) for c in (space.min(), space.max()))
    search(run_dir, "flops", budgets, "fixed", out=tmp_path / "fixed")  # searched: the picks' test top-1
    selections = tmp_path / "fixed" / "selections.json"
    picks = json.loads(selections.read_text())["picks"]
    assert picks and all(p["config"] is not None for p in picks)
    for pick in picks:
        assert pick["test_top1"] == explicit_top1(SubnetConfig.from_dict(pick["config"]))
    search(run_dir, "flops", budgets, "zeroshot:synflow", out=tmp_path / "zeroshot", options={"candidates": 4})
    ctx = build_context(run, "flops")
    proxy = get_proxy("synflow")
    for pick in json.loads((tmp_path / "zeroshot" / "selections.json").read_text())["picks"]:
        config = SubnetConfig.from_dict(pick["config"])
        assert pick["score"] == float(proxy(proxy_input(run.supernet, config, ctx.proxy_images, t.seed, IMAGENET)))

    out = tmp_path / "bundle"  # exported: the manifest's test top-1
    export_run(run_dir, out, "onnx", selections=selections, parity_images=16, latency_runs=2)
    for entry in json.loads((out / "manifest.json").read_text())["models"]:
        assert entry["test_top1"] == explicit_top1(SubnetConfig.from_dict(entry["config"]))
