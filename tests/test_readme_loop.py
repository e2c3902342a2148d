"""The README's minimal training loop runs as it is shown, and learns.

The loop is the fenced ```python block on the line after the marker
``<!-- minimal-loop -->`` in README.md, read from the file every time, so the
code tested is the code a reader copies. It runs unchanged except for what a
test says it changes: its constants (``EPOCHS, WARMUP_EPOCHS`` and ``SEED``,
rewritten in the text) and, for the short budget, the data
(``lvae_np.data.load_dataset`` patched to return the first images of the real
MNIST in ``data/mnist/``).
"""
import contextlib
import dataclasses
import io
import math
import re
from pathlib import Path

import pytest

from lvae_np import data

README = Path(__file__).resolve().parents[1] / "README.md"
LOOP_MARKER = "<!-- minimal-loop -->"
OUTPUT_MARKER = "<!-- minimal-loop-output -->"
SHORT_STEPS = 10          # the short budget: batches of the README's 256 images, beta = 1
FALL = 100.0              # nats the loss must fall by (measured: about 200 in each seed)
OUTPUT_TOLERANCE = 0.05   # relative; seeds 0, 1, 2 differ by up to 3.1% (epoch 1)
NUMBER = re.compile(r"-?\d+\.\d+")


def fenced_block(marker: str, language: str) -> str:
    """The body of the fenced block that opens on the line after ``marker`` in README.md."""
    lines = README.read_text(encoding="utf-8").splitlines()
    at = [i for i, line in enumerate(lines) if line.strip() == marker]
    assert len(at) == 1, f"README.md must hold the line {marker} once, not {len(at)} times"
    start = at[0] + 1
    assert start < len(lines) and lines[start].strip() == f"```{language}", (
        f"the line after {marker} in README.md must open a ```{language} block")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == "```"), None)
    assert end is not None, f"the ```{language} block after {marker} is not closed"
    return "\n".join(lines[start + 1:end]) + "\n"


def set_constants(code: str, **values) -> str:
    """``code`` with the constants ``values`` assigned instead of the README's.

    Each name must be assigned exactly once, on a line of the form
    ``A, B = 1, 2  # comment`` (or ``A = 1``), which is rewritten with the new values.
    """
    assignment = re.compile(r"^([A-Z_]+(?:, [A-Z_]+)*) = ([^#]+?)(\s*#.*)?$")
    found = dict.fromkeys(values, 0)
    out = []
    for line in code.splitlines():
        m = assignment.match(line)
        if m:
            names, given = m.group(1).split(", "), [v.strip() for v in m.group(2).split(",")]
            assert len(names) == len(given), f"cannot read the constants of {line!r}"
            for j, name in enumerate(names):
                if name in values:
                    given[j], found[name] = repr(values[name]), found[name] + 1
            line = f"{', '.join(names)} = {', '.join(given)}{m.group(3) or ''}"
        out.append(line)
    assert all(n == 1 for n in found.values()), (
        f"each of {list(values)} must be assigned once in the README's loop: {found}")
    return "\n".join(out) + "\n"


def run_loop(code: str) -> tuple[dict, str]:
    """Execute ``code``; return its global names and what it printed."""
    printed = io.StringIO()
    names = {"__name__": "readme_minimal_loop"}
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md (minimal loop)", "exec"), names)  # noqa: S102
    return names, printed.getvalue()


@pytest.fixture(scope="module")
def mnist():
    return data.load_dataset("mnist", download=False, progress=False)


def test_the_readme_holds_the_loop_and_its_printout():
    code = fenced_block(LOOP_MARKER, "python")
    compile(code, "README.md (minimal loop)", "exec")
    assert "loss_and_grads" in code and "adam_update" in code and "warmup_beta" in code
    assert len(code.splitlines()) <= 50, "the minimal loop has grown past about 40 lines"
    printout = fenced_block(OUTPUT_MARKER, "text").splitlines()
    assert [re.sub(NUMBER, "N", line) for line in printout] == [
        "epoch 1: beta N, training ELBO N", "epoch 2: beta N, training ELBO N",
        "epoch 3: beta N, training ELBO N", "test ELBO N"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_loss_falls_over_the_first_steps(seed, mnist, monkeypatch):
    """10 steps at beta = 1 on real MNIST: the loss of the last 5 is far below the first 5's."""
    n_train = SHORT_STEPS * 256

    def first_images(name, *args, **kwargs):
        assert name == "mnist"
        return dataclasses.replace(mnist, train=mnist.train[:n_train], test=mnist.test[:1000])

    monkeypatch.setattr(data, "load_dataset", first_images)
    code = set_constants(fenced_block(LOOP_MARKER, "python"), EPOCHS=1, WARMUP_EPOCHS=0,
                         SEED=seed)
    names, printed = run_loop(code)

    losses = names["losses"]
    assert len(losses) == SHORT_STEPS
    assert all(math.isfinite(v) for v in losses), losses
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - FALL, (
        f"seed {seed}: the loss fell from {first:.1f} (first 5 steps) to {last:.1f} "
        f"(last 5), less than {FALL} nats: {[round(v, 1) for v in losses]}")

    m = re.fullmatch(r"epoch 1: beta 1\.0, training ELBO (-?\d+\.\d+)\n"
                     r"test ELBO (-?\d+\.\d+)\n", printed)
    assert m, f"unexpected printout:\n{printed}"
    train_elbo, test_elbo = float(m.group(1)), float(m.group(2))
    # At beta = 1 the epoch's mean ELBO is the mean of -loss (up to float32 rounding).
    assert train_elbo == pytest.approx(-sum(losses) / len(losses), abs=0.02)
    # The test ELBO, of the model after the last step with batch norm's running averages,
    # is above the epoch's mean over its 10 steps (measured: by 15 to 20 nats; without the
    # running averages' updates, it is about 100 nats below).
    assert test_elbo > train_elbo, (test_elbo, train_elbo)


@pytest.mark.slow
def test_the_loop_as_shown_prints_what_the_readme_shows():
    """The block exactly as in README.md (3 epochs of all of MNIST): its printout, within 5%."""
    shown = fenced_block(OUTPUT_MARKER, "text")
    _, printed = run_loop(fenced_block(LOOP_MARKER, "python"))
    assert NUMBER.sub("N", printed) == NUMBER.sub("N", shown), f"printed:\n{printed}"
    for ours, theirs in zip(map(float, NUMBER.findall(printed)), map(float, NUMBER.findall(shown))):
        assert ours == pytest.approx(theirs, rel=OUTPUT_TOLERANCE), (
            f"the loop printed\n{printed}\nwhere README.md shows\n{shown}")
