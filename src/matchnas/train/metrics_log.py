"""``metrics.jsonl`` on resume: the lines of the steps a checkpoint holds, and no others."""

from __future__ import annotations

import json
from pathlib import Path

from matchnas.errors import MatchnasError
from matchnas.io import atomic_write_text, read_text


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past ``step`` (a killed run may have logged steps it never saved, and cut
    its last line short: an unterminated last line goes too). Any other bad line is an error."""
    if not path.exists():
        return
    text = read_text(path, "the run's metrics (JSON lines)")
    lines = text.split("\n")[:-1] if step > 0 else []  # the piece after the last newline is unfinished
    keep = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            logged = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise MatchnasError(f"{path}: line {number} is not a metrics record; repair or delete that line") from None
        if logged <= step:
            keep.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in keep))
