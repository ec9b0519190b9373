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
