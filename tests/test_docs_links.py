"""Every relative link of README.md and docs/*.md reaches a file, and its anchor a heading.

Links are Markdown's ``[text](target)`` and HTML's ``src=``/``href=``; web
addresses are not followed. An anchor (``page.md#heading``, or ``#heading`` in
the same page) must be the GitHub name of a heading of that page: lower case,
punctuation other than ``-`` and ``_`` dropped, spaces as ``-``, repeats
numbered ``-1``, ``-2``. Headings and links inside fenced code blocks do not
count.
"""
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|(?:src|href)=\"([^\"]+)\"")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose(text: str) -> list:
    """The lines of ``text`` outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def anchors(page: Path) -> set:
    """The GitHub anchors of ``page``'s headings."""
    seen, out = {}, set()
    for line in prose(page.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(page: Path) -> list:
    """(line number, target) of every link in ``page``'s prose that is not a web address."""
    out = []
    for number, line in enumerate(prose(page.read_text(encoding="utf-8")), start=1):
        for m in LINK.finditer(line):
            target = m.group(1) or m.group(2)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                out.append((number, target))
    return out


def test_the_pages_exist_and_have_links():
    names = {p.name for p in PAGES}
    assert {"README.md", "training.md", "speed.md", "files.md", "op-contract.md",
            "testing.md"} <= names, names
    assert len(links(PAGES[0])) > 20  # the README's links are found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for number, target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path)).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_every_docs_page_is_linked_from_the_readme():
    targets = {(ROOT / t.partition("#")[0]).resolve() for _, t in links(ROOT / "README.md")}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in targets]
    assert not unlinked, f"docs pages the README does not link to: {unlinked}"


def test_no_page_sends_readers_to_the_alias_for_the_training_loop():
    # lvae_np/train.py is an 8-line alias of the command; the loop is training/trainer.py.
    for page in PAGES:
        assert "lvae_np/train.py" not in page.read_text(encoding="utf-8"), page.name


def test_the_op_contract_is_stated_once():
    # docs/op-contract.md states it; every other page links there.
    statement = "out, cache = op_forward("
    holders = [p.name for p in PAGES if statement in p.read_text(encoding="utf-8")]
    assert holders == ["op-contract.md"], holders
