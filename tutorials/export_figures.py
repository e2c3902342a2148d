"""Run the tutorial notebooks and save their figures as PNGs in tutorials/figures/.

The notebooks are stored without outputs (tutorials/README.md, "Conventions"),
so a reader browsing the repository sees their figures through these files,
which tutorials/README.md shows. Figure k of notebook NN_name.ipynb, counted in
the order the notebook draws them, becomes figures/NN_name_k.png. The
notebooks themselves are not changed. Run it after changing a notebook's
figures:

    python tutorials/export_figures.py                 # every notebook
    python tutorials/export_figures.py 03_training_warmup_batchnorm.ipynb
"""
import argparse
import base64
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
FIGURES = HERE / "figures"


def figures(path: Path, timeout: int = 600) -> list:
    """Execute one notebook in tutorials/ and return its PNG outputs (bytes), in order."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(HERE)}}).execute()
    return [base64.b64decode(output["data"]["image/png"])
            for cell in nb.cells if cell.cell_type == "code"
            for output in cell.outputs if "image/png" in output.get("data", {})]


def export(path: Path) -> list:
    """Write path's figures to figures/<stem>_<k>.png, removing its old ones; return the files."""
    pngs = figures(path)
    FIGURES.mkdir(exist_ok=True)
    for old in FIGURES.glob(f"{path.stem}_*.png"):
        old.unlink()
    written = []
    for k, png in enumerate(pngs, start=1):
        out = FIGURES / f"{path.stem}_{k}.png"
        out.write_bytes(png)
        written.append(out)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tutorials/export_figures.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebook file names (default: all of tutorials/)")
    args = parser.parse_args(argv)
    paths = [HERE / Path(name).name for name in args.notebooks] or sorted(HERE.glob("*.ipynb"))
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook in {HERE}: {', '.join(missing)}")
    for path in paths:
        written = export(path)
        size = sum(p.stat().st_size for p in written)
        print(f"{path.name}: {len(written)} figures, {size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
