"""The documents a user clones stand on their own: every link and plot they name is in the
repository, nothing points outside it, they describe the code rather than how it was written, and
``matchnas --help`` is plain text."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = {"__pycache__", "runs", "results", "img"}


def _texts():
    """README, docs, and the text files of src/, bench/ and tests/ (not caches or bench outputs)."""
    yield from DOCS
    for top in ("src", "bench", "tests"):
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in {".py", ".md", ".yaml", ".sh", ".txt"} \
                    and not SKIP & set(path.relative_to(ROOT).parts) and ".egg-info" not in str(path):
                yield path


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_and_plots_resolve(doc):
    text = doc.read_text()
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        if path:
            assert (doc.parent / path).exists(), f"{doc.name} links to {path}, which is not in the repository"
        elif anchor:
            assert anchor in anchors, f"{doc.name} links to #{anchor}, which no heading of it has"


def test_nothing_points_outside_the_repository_or_names_an_issue():
    outside = re.compile(r"\.\./" + "shared|" + "METHOD" + r"\.md")
    history = re.compile(r"issue #?[0-9]+|(this|next|last) " + "session", re.I)
    for path in _texts():
        if path == Path(__file__):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
            assert not outside.search(line), where
            assert not history.search(line), where


def test_help_is_plain_text():
    from matchnas.cli import build_parser

    text = build_parser().format_help()
    assert "``" not in text and ":class:" not in text
    assert "supernet" in text
