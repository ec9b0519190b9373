"""LiteRT (``.tflite``) export: float32 parity and int8 agreement on random Lite0 and MobileNetV3
subnets, a bundle's LiteRT files and their manifest records, predict on a ``.tflite``, and the
refusals (missing extra, an op without a lowering, a file that is no ``.tflite``)."""

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from matchnas.cli import main
from matchnas.errors import MatchnasError
from matchnas.export import export_run, parse_formats
from matchnas.export.litert_format import LITERT_MODULES
from matchnas.export.quantize import check_drop, quantized_file
from matchnas.litert_runtime import INSTALL_HINT
from matchnas.nn import Supernet
from matchnas.predict import classify, load_model
from matchnas.space_file import load_space

from .conftest import randomize_batch_norms
from .test_export import _net, run  # noqa: F401 (run: the tiny digits run fixture)

RELATIVE = 1e-4  # float32 .tflite logits against PyTorch, relative to the largest logit
INT8_POINTS = 5.0  # int8 top-1 drop tolerance on 64 images of a random-weight subnet (3 images)


def _needs_litert():
    pytest.importorskip("litert_torch", reason=f"LiteRT not installed ({INSTALL_HINT})")
    pytest.importorskip("ai_edge_quantizer", reason=f"LiteRT not installed ({INSTALL_HINT})")


def _random_subnet(space_name: str, bn_eps: float, resolution: int = 32) -> torch.nn.Module:
    """A static subnet with random weights and BN statistics, of a random config at ``resolution``."""
    space = load_space(space_name)
    torch.manual_seed(0)
    supernet = Supernet(space, num_classes=10, bn_eps=bn_eps)
    randomize_batch_norms(supernet, torch.Generator().manual_seed(1))
    config = dataclasses.replace(space.sample(np.random.default_rng(3)), resolution=resolution)
    return supernet.extract(config).eval()


@pytest.mark.parametrize("space_name, bn_eps", [("efficientnet-lite0-32to64", 1e-3), ("mobilenetv3-large-100-32", 1e-5)],
                         ids=["lite0", "mobilenetv3"])
def test_litert_float_and_int8_tflite_match_the_pytorch_subnet(space_name, bn_eps, tmp_path):
    _needs_litert()
    from ai_edge_litert.interpreter import Interpreter

    from matchnas.export.litert_format import export_litert
    from matchnas.export.quantize_litert import quantize_litert

    net = _random_subnet(space_name, bn_eps)
    generator = torch.Generator().manual_seed(4)
    x, calibration = torch.randn(64, 3, 32, 32, generator=generator), torch.randn(32, 3, 32, 32, generator=generator)
    with torch.no_grad():
        reference = net(x).numpy()
    record = export_litert(net, x, tmp_path / "m.tflite", {}, threads=1, runs=3)
    parity = record["parity"]
    assert parity["max_abs_logit_diff"] <= RELATIVE * parity["max_abs_logit"] and parity["top1_agreement"] == 1.0
    assert parity["max_abs_logit"] == pytest.approx(float(np.abs(reference).max()))
    assert record["input_shape"] == [1, 3, 32, 32] and record["output_shape"] == [1, 10]
    assert record["latency"]["runtime"].startswith("ai-edge-litert") and record["latency"]["threads"] == 1
    interpreter = Interpreter(model_path=str(tmp_path / "m.tflite"))  # the file, read independently
    interpreter.allocate_tensors()
    given, wanted = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(given["index"], x[:1].numpy())
    interpreter.invoke()
    assert np.abs(interpreter.get_tensor(wanted["index"]) - reference[:1]).max() <= RELATIVE * np.abs(reference).max()

    labels = reference.argmax(1)  # the float subnet's own classes: its top-1 is 1, the drop is the disagreement
    int8 = quantized_file(quantize_litert, net, tmp_path / "m.tflite", tmp_path / "m.int8.tflite",
                          (calibration.numpy(), {"images": 32}), (x.numpy(), labels), reference, 1.0, 1, 3)
    check_drop("m.int8.tflite", int8, INT8_POINTS)
    assert int8["top1_agreement_with_float32"] >= 1 - INT8_POINTS / 100 and int8["input_dtype"] == "int8"
    assert int8["top1_drop_points"] == pytest.approx(100 * (1 - int8["top1_agreement_with_float32"]))
    assert int8["float_ops"] == []  # int8 throughout: squeeze-excite, hard-swish and ReLU6 included
    assert (tmp_path / "m.int8.tflite").stat().st_size < (tmp_path / "m.tflite").stat().st_size / 3


@pytest.fixture(scope="module")
def litert_bundle(request):
    _needs_litert()  # before the digits run is trained
    run_dir = request.getfixturevalue("run")[0]
    out = run_dir.parent / "litert-bundle"
    summary = export_run(run_dir, out, "onnx,litert", subnet="min", quantize="int8", int8_tolerance=5.0,
                         calibration_images=16, parity_images=32, latency_runs=5)
    return out, json.loads((out / "manifest.json").read_text()), summary


def test_litert_bundle_records_parity_accuracy_and_measured_cost_like_the_other_formats(run, litert_bundle):  # noqa: F811
    out, manifest, summary = litert_bundle
    [model] = manifest["models"]
    f, q, o = model["files"]["litert"], model["files"]["litert-int8"], model["files"]["onnx"]
    assert f["file"].endswith(".tflite") and q["file"].endswith(".int8.tflite") and "litert-int8 top-1" in summary
    assert set(o) - set(f) <= {"opset"} and {"converter", "output_shape"} <= set(f)  # the ONNX record's fields, and more
    assert f["parity"]["max_abs_logit_diff"] <= f["parity"]["tolerance"] == 1e-3
    assert f["parity"]["max_abs_logit_diff"] <= RELATIVE * max(1.0, f["parity"]["max_abs_logit"])
    assert q["float32_bytes"] == f["bytes"] > q["bytes"] and q["top1_drop_tolerance_points"] == 5.0
    assert q["float32_test_top1"] == model["test_top1"] and q["calibration"]["images"] == 16
    for record in (f, q):
        measured = record["measured"]
        assert measured["latency_ms"] == record["latency"]["ms_median"] > 0 and measured["bytes"] == record["bytes"]
        assert measured["peak_activation_bytes"] > 0 and measured["peak_source"].startswith("LiteRT")
        assert record["budget_check"] is None  # --subnet: no budget to judge
    assert q["measured"]["peak_activation_bytes"] < f["measured"]["peak_activation_bytes"]  # int8 tensors


def test_predict_runs_float_and_int8_tflite_files_like_the_onnx_one(run, litert_bundle, tmp_path):  # noqa: F811
    out, manifest, _ = litert_bundle
    [model] = manifest["models"]
    png = tmp_path / "digit.png"
    Image.fromarray(run[3].source.test.images[0, 0].numpy()).save(png)
    [onnx_top] = classify(load_model(out / model["files"]["onnx"]["file"]), [png], top_k=10)
    [float_top] = classify(load_model(out / model["files"]["litert"]["file"]), [png], top_k=10)
    assert [label for label, _ in float_top] == [label for label, _ in onnx_top]
    assert max(abs(p - dict(onnx_top)[label]) for label, p in float_top) < 1e-4
    int8 = load_model(out / model["files"]["litert-int8"]["file"])
    assert int8.classes == list(run[3].source.test.classes) and classify(int8, [png], top_k=1)[0][0][0] in int8.classes
    assert main(["predict", str(out / model["files"]["litert"]["file"]), str(png)]) == 0


def test_litert_refused_with_install_hint_when_missing(tmp_path, monkeypatch, capsys):
    for name in ("litert_torch", "ai_edge_litert", "ai_edge_quantizer", *LITERT_MODULES):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MatchnasError) as err:
        parse_formats("onnx,litert")
    assert INSTALL_HINT == "pip install 'matchnas[litert]'" and INSTALL_HINT in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(MatchnasError, match="not installed"):
        export_run(tmp_path / "no-run", tmp_path / "out", "litert")  # refused before the run is read
    (tmp_path / "m.tflite").write_bytes(b"TFL3")
    assert main(["predict", str(tmp_path / "m.tflite"), str(tmp_path / "x.png")]) == 2
    assert INSTALL_HINT in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(4096), b""], ids=["random-bytes", "empty"])
def test_predict_refuses_a_file_that_is_not_a_tflite(content, tmp_path, capsys):
    pytest.importorskip("ai_edge_litert.interpreter", reason=f"LiteRT not installed ({INSTALL_HINT})")
    fake, png = tmp_path / "x.tflite", tmp_path / "x.png"
    fake.write_bytes(content)
    Image.new("RGB", (8, 8)).save(png)
    with pytest.raises(MatchnasError, match=r"x\.tflite: not a LiteRT model"):
        load_model(fake, normalisation="lite")
    assert main(["predict", str(fake), str(png), "--normalisation", "lite"]) == 2
    err = capsys.readouterr().err
    assert "not a LiteRT model" in err and err.count("\n") == 1


class _Bessel(torch.nn.Module):
    def forward(self, x):
        return torch.special.i0(x).mean((2, 3))


def test_an_op_litert_cannot_convert_is_named_in_one_line(tmp_path):
    _needs_litert()
    from matchnas.export.litert_format import conversion_failure, export_litert

    with pytest.raises(MatchnasError) as err:
        export_litert(_Bessel(), torch.randn(2, 3, 8, 8), tmp_path / "b.tflite", {}, threads=1, runs=1)
    assert str(err.value) == "b.tflite: litert-torch cannot convert op aten.i0: LiteRT has no lowering for it: nothing written"
    assert not (tmp_path / "b.tflite").exists()
    # a converter message without "Lowering not found" still names the op FX was executing
    fx = AssertionError("bad shapes\n\nWhile executing %inv : call_function[target=torch.ops.aten.linalg_inv.default]")
    assert conversion_failure(fx) == "litert-torch cannot convert op aten.linalg_inv: bad shapes"
