"""The README's Python example must run as written."""

import re
from pathlib import Path


def test_readme_python_example_runs(capsys):
    text = Path(__file__).resolve().parent.parent.joinpath("README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


def test_ci_runs_the_readme_test_command_which_installs_torch_first():
    root = Path(__file__).resolve().parent.parent
    section = root.joinpath("README.md").read_text().split("## Test", 1)[1]
    command = re.search(r"```bash\n(.*?)\n```", section, flags=re.S).group(1).strip()
    assert command.startswith("python -m pip install torch==") and command.endswith("python -m pytest")
    assert command in root.joinpath(".ci", "run").read_text().splitlines()
