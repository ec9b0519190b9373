import subprocess
import sys

import pytest
import yaml

from matchnas.cli import main
from matchnas.space_file import load_space


def test_space_prints_stages_count_and_costs(capsys):
    assert main(["space", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert f"configs: {load_space('efficientnet-lite0').num_configs():,}" in out
    assert all(f"\n{r:>5} " in out for r in (24, 28, 32))
    assert "[144, 192]" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["space", "--backbone", "resnet"], "unknown backbone 'resnet'"),
        (["space", "--space", "missing.yaml"], "space file not found: missing.yaml"),
    ],
)
def test_errors_are_one_line_with_nonzero_exit(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_misspelt_space_key_from_the_command_line(tmp_path):
    data = load_space("efficientnet-lite0").to_dict()
    data["stages"][2]["widht"] = data["stages"][2].pop("width")
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = subprocess.run([sys.executable, "-m", "matchnas", "space", "--space", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("unknown key 'widht' (allowed: act, depth, expand, kernel, per_block, se, stride, width)")
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
