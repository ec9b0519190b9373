"""Export of selected subnets (ONNX, ExecuTorch), the bundle manifest, and predict."""

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from matchnas import cost
from matchnas.errors import MatchnasError
from matchnas.experiment import load_experiment
from matchnas.export import EXECUTORCH_MODULES, INSTALL_HINT, TOLERANCE, export_run
from matchnas.backbones import BACKBONES
from matchnas.predict import NORMALISATIONS, classify, load_model, predict
from matchnas.space_file import space_from_dict
from matchnas.run import load_run, open_run
from matchnas.train import loop
from matchnas.evaluate import calibrated_subnet

from .conftest import TINY_SPACE

FAST = {"parity_images": 64, "latency_runs": 5}  # the defaults (256, 50) are for real exports


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step digits run, loaded, with a selections.json as `matchnas search` writes it: a budget
    no config fits, and two budgets answered by the same (min) config."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    overrides = ["train.batch_size=8", "train.warmup_steps=2", "train.recalibration_images=64",
                 "data.image_size=32", "data.labels_per_class=3", "data.max_unlabeled=200", "train.steps=2"]
    loop.train(load_experiment(None, overrides), run_dir)
    experiment, supernet, data, _ = load_run(run_dir)
    space = supernet.space
    small = space.min()
    pick = {"config_id": small.id, "config": small.to_dict(), "cost": cost.flops(space, small, 10), "score": 1.0, "test_top1": None}
    selections = {
        "run": str(run_dir), "metric": "flops", "unit": "FLOPs", "strategy": "fixed", "seconds": 0.0,
        "space": space.name, "space_digest": space.digest, "classes": list(data.source.train.classes),
        "picks": [{"budget": 1e3, "config_id": None, "config": None, "cost": pick["cost"], "score": None, "test_top1": None},
                  {"budget": 4e6, **pick}, {"budget": 5e6, **pick}],
        "front": [],
    }
    (run_dir / "selections.json").write_text(json.dumps(selections))
    return run_dir, experiment, supernet.eval(), data


@pytest.fixture(scope="module")
def bundle(run):
    run_dir = run[0]
    out = run_dir.parent / "bundle"
    summary = export_run(run_dir, out, "onnx", **FAST)
    return out, json.loads((out / "manifest.json").read_text()), summary


def _net(run, config):
    _, experiment, supernet, data = run
    pool = torch.cat([data.sets.labeled.images, data.sets.unlabeled.images])
    t = experiment.train
    return calibrated_subnet(supernet, config, pool, t.recalibration_images, t.seed, data.flip,
                             normalisation=data.normalisation).eval()


def test_manifest_describes_each_budget(run, bundle):
    run_dir, experiment, supernet, data = run
    out, manifest, summary = bundle
    space = supernet.space
    assert manifest["format_version"] == 1 and manifest["space_digest"] == space.digest
    assert manifest["metric"] == "flops" and manifest["run_dir"] == str(run_dir.resolve())
    assert [s["budget"] for s in manifest["skipped"]] == [1e3] and "skipped budget 1.00K" in summary
    assert [m["budget"] for m in manifest["models"]] == [4e6, 5e6]
    config = space.min()
    top1 = open_run(run_dir).top1(config)
    for m in manifest["models"]:
        assert m["config"] == config.to_dict() and m["config_id"] == config.id
        assert m["flops"] == cost.flops(space, config, 10)
        assert m["params"] == cost.params(space, config, 10)
        assert m["peak_memory_bytes"] == cost.peak_memory(space, config, 10, batch_size=1)
        assert m["test_top1"] == top1
        assert m["resolution"] == config.resolution and m["classes"] == [str(k) for k in range(10)]
        assert m["normalisation"] == {"mean": 127.0, "std": 128.0, "scale": "0..255"}
        assert m["preprocess"]["color"] == "grey" and m["preprocess"]["fit_size"] == 32
        # EfficientNet-Lite's (x - 127) / 128 stays two numbers, as every bundle before said it
        assert (m["preprocess"]["mean"], m["preprocess"]["std"]) == (127.0, 128.0)
        f = m["files"]["onnx"]
        assert f["file"] == f"{m['budget_label']}-{config.id}.onnx"
        assert f["sha256"] == hashlib.sha256((out / f["file"]).read_bytes()).hexdigest()
        assert f["input_shape"] == ["batch", 3, config.resolution, config.resolution]
        assert f["parity"]["max_abs_logit_diff"] <= f["parity"]["tolerance"] == TOLERANCE["onnx"]
        assert f["parity"]["top1_agreement"] == 1.0 and f["parity"]["batch_sizes"] == [1, 64]
        assert f["latency"]["ms_median"] > 0 and f["latency"]["intra_op_num_threads"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json"] + [m["files"]["onnx"]["file"] for m in manifest["models"]])


@pytest.mark.parametrize("batch", [1, 7])
def test_onnxruntime_matches_the_pytorch_subnet(run, bundle, batch):
    out, manifest, _ = bundle
    model = manifest["models"][0]
    config = run[2].space.min()
    x = run[3].normalisation(run[3].source.test.images[10 : 10 + batch], size=config.resolution)
    with torch.no_grad():
        expected = _net(run, config)(x).numpy()
    session = ort.InferenceSession(str(out / model["files"]["onnx"]["file"]), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    assert got.shape == (batch, 10)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE["onnx"])


def test_predict_png_gives_the_subnets_class_and_probabilities(run, bundle, tmp_path):
    out = bundle[0]
    data, config = run[3], run[2].space.min()
    images = data.source.test.images[:64]
    with torch.no_grad():
        logits = _net(run, config)(run[3].normalisation(images, size=config.resolution))
    right = (logits.argmax(1) == data.source.test.labels[:64]).nonzero()
    i = int(right[0]) if len(right) else 0  # an image the model gets right, if it has one
    png = tmp_path / "digit.png"
    Image.fromarray(images[i, 0].numpy()).save(png)
    [top] = classify(load_model(out), [png], top_k=3)
    probs = torch.softmax(logits[i].double(), 0)
    assert top[0][0] == str(int(logits[i].argmax()))
    if len(right):
        assert top[0][0] == data.source.test.classes[int(data.source.test.labels[i])]
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True) and sum(p for _, p in top) <= 1 + 1e-9
    for label, p in top:
        assert abs(p - float(probs[int(label)])) < 1e-3
    text = predict(out, [png], top_k=3, budget="5M")
    assert str(png) in text and f"1. {top[0][0]}" in text and "%" in text


def test_predict_bare_onnx_reads_its_input_shape_and_is_told_its_normalisation(bundle, tmp_path):
    out, manifest, _ = bundle
    model = onnx.load(str(out / manifest["models"][0]["files"]["onnx"]["file"]))
    del model.metadata_props[:]  # an ONNX file from elsewhere: no classes, no preprocessing
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    png = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(png)
    with pytest.raises(MatchnasError, match="records no input normalisation.*--normalisation lite or imagenet"):
        load_model(bare)  # no silent guess
    loaded = load_model(bare, normalisation="lite")
    assert loaded.classes is None and loaded.preprocess["resolution"] == manifest["models"][0]["resolution"]
    assert (loaded.preprocess["mean"], loaded.preprocess["std"]) == (127.0, 128.0)
    [top] = classify(loaded, [png], top_k=10)
    assert sorted(label for label, _ in top) == sorted(str(k) for k in range(10))
    with pytest.raises(MatchnasError, match="--resolution 99 differs"):
        load_model(bare, resolution=99, normalisation="lite")


def test_predict_normalisation_names_are_the_backbones_and_a_recorded_one_wins(bundle):
    for name, backbone in (("lite", "efficientnet-lite0"), ("imagenet", "mobilenetv3-large-100")):
        mean, std = BACKBONES[backbone].normalisation.manifest_values()
        assert NORMALISATIONS[name] == {"mean": pytest.approx(mean), "std": pytest.approx(std)}
    assert load_model(bundle[0], normalisation="lite").preprocess["mean"] == 127.0  # the same as recorded: fine
    with pytest.raises(MatchnasError, match="--normalisation imagenet differs"):
        load_model(bundle[0], normalisation="imagenet")
    with pytest.raises(MatchnasError, match="unknown normalisation 'tflite'"):
        load_model(bundle[0], normalisation="tflite")


def test_predict_needs_no_torch(bundle, tmp_path):
    """predict.py with torch made unimportable (the package __init__, which needs torch, is skipped)."""
    out, _, _ = bundle
    png = tmp_path / "x.png"
    Image.new("L", (8, 8), 128).save(png)
    package = Path(importlib.util.find_spec("matchnas").origin).parent
    code = (
        "import sys, types\n"
        "sys.modules['torch'] = None\n"
        f"pkg = types.ModuleType('matchnas'); pkg.__path__ = [{str(package)!r}]; sys.modules['matchnas'] = pkg\n"
        "from matchnas.predict import predict\n"
        f"print(predict({str(out)!r}, [{str(png)!r}], top_k=2))\n"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules if sys.modules[m] is not None)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert str(png) in proc.stdout and "  1. " in proc.stdout


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.png", "missing.png: cannot read image"),
        (lambda d: (d / "broken.png").write_bytes(b"not a png") and d / "broken.png", "broken.png: cannot read image"),
    ],
)
def test_predict_refuses_an_unreadable_image(bundle, tmp_path, make, message):
    with pytest.raises(MatchnasError, match=message):
        predict(bundle[0], [make(tmp_path)])


def test_predict_refuses_an_unknown_budget_a_changed_file_and_a_broken_model(bundle, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(MatchnasError, match="junk.onnx: onnxruntime cannot load it"):
        load_model(tmp_path / "junk.onnx")
    out = tmp_path / "copy"
    shutil.copytree(bundle[0], out)
    with pytest.raises(MatchnasError, match="no model for budget '9M'"):
        load_model(out, budget="9M")
    victim = out / bundle[1]["models"][0]["files"]["onnx"]["file"]
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(MatchnasError, match="changed since export"):
        load_model(victim)


def test_unknown_format_and_existing_out_dir_are_refused_before_anything_runs(run, bundle, tmp_path):
    with pytest.raises(MatchnasError, match="unknown export format 'tflite'"):
        export_run(run[0], tmp_path / "a", "onnx,tflite")
    with pytest.raises(MatchnasError, match="already exists: .*--force"):
        export_run(run[0], bundle[0], "onnx")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(MatchnasError, match="only replaces an export bundle"):
        export_run(run[0], tmp_path / "mine", "onnx", force=True)
    with pytest.raises(MatchnasError, match="would replace the run itself"):
        export_run(run[0], run[0], "onnx", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_executorch_refused_with_install_hint_when_missing(run, tmp_path, monkeypatch):
    for name in ("executorch", *EXECUTORCH_MODULES):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MatchnasError) as err:
        export_run(run[0], tmp_path / "out", "onnx,executorch")
    assert INSTALL_HINT in str(err.value) and "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())


def test_config_or_selections_from_another_space_write_nothing(run, tmp_path):
    tiny = space_from_dict(TINY_SPACE)
    config = tmp_path / "tiny.json"
    config.write_text(tiny.config_to_json(tiny.min()))
    with pytest.raises(MatchnasError, match=r"made for space 'tiny'"):
        export_run(run[0], tmp_path / "out", subnet=config)
    selections = json.loads((run[0] / "selections.json").read_text())
    selections["space_digest"] = tiny.digest
    other = tmp_path / "selections.json"
    other.write_text(json.dumps(selections))
    with pytest.raises(MatchnasError, match="made for space .* the run's space is"):
        export_run(run[0], tmp_path / "out", selections=other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["selections.json", "tiny.json"]


def test_corrupted_checkpoint_writes_nothing(run, tmp_path):
    broken = tmp_path / "run"
    broken.mkdir()
    for name in ("experiment.yaml", "split.json", "selections.json"):
        shutil.copy(run[0] / name, broken / name)
    data = (run[0] / "checkpoint-final.pt").read_bytes()
    (broken / "checkpoint-final.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(MatchnasError, match="truncated or corrupted checkpoint"):
        export_run(broken, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_above_tolerance_fails_loudly_and_force_keeps_the_old_bundle_until_the_new_one_is_done(run, bundle, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(bundle[0], out)
    before = (out / "manifest.json").read_text()
    with pytest.raises(MatchnasError, match=r"min-\w+\.onnx: onnx output differs from PyTorch by .* tolerance 1e-12"):
        export_run(run[0], out, subnet="min", force=True, tolerance=1e-12, **FAST)
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no half-built folder left
    export_run(run[0], out, subnet="min", force=True, **FAST)
    [model] = json.loads((out / "manifest.json").read_text())["models"]
    assert model["budget"] is None and model["files"]["onnx"]["file"] == f"min-{model['config_id']}.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_executorch_pte_matches_the_pytorch_subnet(run, tmp_path):
    pytest.importorskip("executorch.exir", reason="ExecuTorch not installed (pip install 'matchnas[mobile]')")
    from executorch.runtime import Runtime

    export_run(run[0], tmp_path / "out", "executorch", subnet="min", parity_images=32, latency_runs=5)
    [model] = json.loads((tmp_path / "out" / "manifest.json").read_text())["models"]
    f = model["files"]["executorch"]
    assert f["input_shape"][0] == 1 and "fixed at 1" in f["batch"]
    assert f["parity"]["max_abs_logit_diff"] <= TOLERANCE["executorch"] and f["parity"]["top1_agreement"] == 1.0
    path = tmp_path / "out" / f["file"]
    assert f["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    config = run[2].space.min()
    x = run[3].normalisation(run[3].source.test.images[:1], size=config.resolution)
    got = Runtime.get().load_program(path).load_method("forward").execute([x])[0].numpy()
    with torch.no_grad():
        np.testing.assert_allclose(got, _net(run, config)(x).numpy(), rtol=0, atol=TOLERANCE["executorch"])
