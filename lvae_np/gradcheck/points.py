"""The course's point table: every assigned item, the notebook cell that grades it, its points.

One table, read in three places:

* the assignment notebooks (``assignments/*.ipynb``): an autograded test
  cell opens with ``# N points: ...`` and a written answer's question with
  ``**(N points)**``; nbgrader's cell metadata ``points`` says N again, and
  each notebook's first cell gives the sums. ``tests/test_assignments.py``
  reads every notebook and checks that all of them agree with this table;
* the autograder: ``grade`` gives each registered case that an item grades
  by name its share of the item's points (an item of two cases, half each),
  and grades only those cases when given no names; a case no item grades is
  worth nothing to the course (``python -m lvae_np.gradcheck --grade --all``
  grades every case, the unassigned ones at their registry weight,
  ``Case.points``);
* the student README of a release (``lvae_np.course.release``): every
  function and every cell to write, per notebook.

A cell earns points only for what the student wrote: each case it grades by
name has its own functions (``Case.functions``) among those the notebook
asks for, and ``grade`` runs that case with the student's functions for its
own and the package's for everything else (``tests/test_assignments.py``
checks this of the table). Running the package's composites and whole models
on the student's ops (``grade(..., together=True)``) is feedback, in cells
that award no points: the MLP block of assignment 1, the whole LVAE of
assignment 4.

A notebook's items are listed in the order of its cells. This module needs
nothing of lvae_np: the release reads it without loading the registry.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Assigned:
    """One graded cell of an assignment notebook.

    Attributes:
        cell: the cell's nbgrader ``grade_id``.
        points: what it is worth (nbgrader's ``points`` for the cell).
        cases: the registered gradient-check cases the cell grades by name
            (``grade([...])``), which share its points equally; empty for a
            cell that checks values in the notebook itself.
        written: a written answer, graded by hand (else autograded).
    """

    cell: str
    points: int
    cases: tuple = ()
    written: bool = False


@dataclass(frozen=True)
class Assignment:
    """One assignment notebook: the functions the student writes and the cells that grade them.

    Attributes:
        notebook: its file name in ``assignments/``.
        title: what it is about, in a few words.
        functions: every function its answer cells ask for, in order:
            ``"layers.dense_backward"`` for one with the package's name and
            signature (its stub in the student copy of the package is
            ``lvae_np/layers.py``'s), a bare name (``"iw_bound"``) for one
            of the notebook's own.
        items: its graded cells, in the notebook's order.
    """

    notebook: str
    title: str
    functions: tuple
    items: tuple

    @property
    def autograded(self) -> int:
        return sum(i.points for i in self.items if not i.written)

    @property
    def written(self) -> int:
        return sum(i.points for i in self.items if i.written)

    @property
    def points(self) -> int:
        return self.autograded + self.written


ASSIGNMENTS = (
    Assignment("01_dense_and_leaky_relu.ipynb", "the dense layer and the leaky ReLU, backward",
               ("layers.dense_backward", "layers.leaky_relu_backward"), (
                   Assigned("test_dense", 4, ("dense",)),
                   Assigned("test_leaky_relu", 3, ("leaky-relu",)),
                   Assigned("q_kink", 1, written=True),
               )),
    Assignment("02_batchnorm.ipynb", "batch normalisation, backward",
               ("layers.batchnorm_backward",), (
                   Assigned("q_derivation", 3, written=True),
                   Assigned("test_batchnorm_training", 6, ("batchnorm",)),
                   Assigned("test_batchnorm_eval", 1, ("batchnorm-eval",)),
                   Assigned("q_ones", 2, written=True),
               )),
    Assignment("03_merge_and_kl.ipynb", "the precision-weighted merge and the Gaussian KL",
               ("gaussian.merge_forward", "gaussian.merge_backward",
                "gaussian.kl_normal_forward", "gaussian.kl_normal_backward"), (
                   Assigned("q_product", 3, written=True),
                   Assigned("test_merge_forward", 2),
                   Assigned("test_merge_backward", 4, ("merge",)),
                   Assigned("q_kl", 3, written=True),
                   Assigned("test_kl_forward", 2),
                   Assigned("test_kl_backward", 3, ("kl-normal",)),
               )),
    Assignment("04_ladder_step.ipynb", "the reparameterised sample and the ladder step",
               ("gaussian.reparameterize_forward", "gaussian.reparameterize_backward",
                "steps.ladder_step_backward"), (
                   Assigned("test_reparameterize", 3, ("reparameterize",)),
                   Assigned("test_ladder_step", 10, ("ladder-step", "ladder-step-mc")),
                   Assigned("q_forgotten_path", 2, written=True),
               )),
    Assignment("05_importance_weighted_bound.ipynb",
               "log-mean-exp and the importance-weighted bound (optional)",
               ("bounds.logmeanexp_forward", "bounds.logmeanexp_backward",
                "toy_log_weights", "iw_bound"), (
                   Assigned("test_logmeanexp_forward", 2),
                   Assigned("test_logmeanexp_backward", 2, ("logmeanexp",)),
                   Assigned("test_toy_log_weights", 2),
                   Assigned("test_bound_rises", 2),
                   Assigned("q_lower_bound", 2, written=True),
               )),
)


class PointTableError(ValueError):
    """The table contradicts itself (a case assigned twice, points that do not split)."""


def case_points(assignments=ASSIGNMENTS) -> dict:
    """Registered case name -> its points in the course, for every case a cell grades by name.

    Raises:
        PointTableError: a case graded by two cells, or a cell's points that
            its cases cannot share equally.
    """
    found = {}
    for assignment in assignments:
        for item in assignment.items:
            if not item.cases:
                continue
            share, left = divmod(item.points, len(item.cases))
            if left or not share:
                raise PointTableError(f"{assignment.notebook}: {item.cell}'s {item.points} points "
                                      f"do not split equally among {', '.join(item.cases)}")
            for case in item.cases:
                if case in found:
                    raise PointTableError(f"case {case!r} is graded by two cells")
                found[case] = share
    return found


CASE_POINTS = case_points()  # "batchnorm" -> 6, "ladder-step" -> 5, ...


def total(assignments=ASSIGNMENTS) -> int:
    """All the course's points, autograded and written."""
    return sum(a.points for a in assignments)


def function_name(function: str) -> str:
    """``"dense_backward"`` for ``"layers.dense_backward"`` (and for ``"dense_backward"``)."""
    return function.rpartition(".")[2]
