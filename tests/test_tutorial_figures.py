"""The tutorials' figures, exported as PNGs for readers who do not run the notebooks.

``tutorials/export_figures.py`` writes ``tutorials/figures/NN_name_k.png`` from
each notebook's outputs (the notebooks are stored without them), and
tutorials/README.md shows them. These tests check the files against the
README and the notebooks; they run nothing.
"""
import re
from pathlib import Path

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
FIGURES = TUTORIALS / "figures"
MAX_TOTAL_BYTES = 3 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _pngs():
    return sorted(FIGURES.glob("*.png"))


def _shown():
    readme = (TUTORIALS / "README.md").read_text(encoding="utf-8")
    return re.findall(r"\]\((figures/[^)\s]+)\)", readme)


def test_every_figure_is_shown():
    shown = set(_shown())
    hidden = [p.name for p in _pngs() if f"figures/{p.name}" not in shown]
    assert _pngs(), f"no figures in {FIGURES}: run python tutorials/export_figures.py"
    assert not hidden, f"figures not shown in tutorials/README.md: {hidden}"


def test_every_figure_shown_exists():
    missing = [link for link in _shown() if not (TUTORIALS / link).is_file()]
    assert not missing, f"tutorials/README.md shows figures that do not exist: {missing}"


def test_figures_belong_to_notebooks():
    stems = {p.stem for p in TUTORIALS.glob("*.ipynb")}
    for png in _pngs():
        match = re.fullmatch(r"(.+)_(\d+)\.png", png.name)
        assert match and match.group(1) in stems, (
            f"{png.name}: expected NN_name_k.png for a notebook NN_name.ipynb in {TUTORIALS}")
        assert png.read_bytes()[:8] == PNG_SIGNATURE, f"{png.name} is not a PNG file"


def test_figures_are_numbered_from_one():
    by_notebook = {}
    for png in _pngs():
        stem, k = png.stem.rsplit("_", 1)
        by_notebook.setdefault(stem, []).append(int(k))
    for stem, numbers in by_notebook.items():
        assert sorted(numbers) == list(range(1, len(numbers) + 1)), (
            f"{stem}: figures {sorted(numbers)}, expected 1..{len(numbers)} (stale files?)")


def test_figures_stay_small():
    total = sum(p.stat().st_size for p in _pngs())
    assert total < MAX_TOTAL_BYTES, f"figures take {total / 2**20:.1f} MB, more than 3 MB"
