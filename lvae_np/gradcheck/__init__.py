"""Gradient checks: the checker (``engine``), the registered cases (``cases``), the autograder and the CLI.

The package runs one way: ``__main__`` (``python -m lvae_np.gradcheck``, with
or without ``--grade``) uses ``grading`` (the autograder) and ``cases``, which
use ``engine``; ``grading`` takes the course's points from ``points`` (the
point table, which the assignment notebooks agree with and the release's
student README lists), refuses what is not the student's code with
``ownership`` and reports with ``report``. It grades each case on its own
(the student's functions for the case's own, the installed package's for the
rest), all of them together as feedback (``together=True``), or a student's
copy of the package (``submission=DIR``, ``--grade --submission DIR``), which
``submission`` loads. The engine uses nothing of lvae_np but its array helpers.
Importing ``lvae_np.gradcheck`` loads only the engine, whose public names it
re-exports::

    from lvae_np.gradcheck import assert_gradients, check_gradients

The autograder's ``grade`` and ``GradeReport`` are exported too, loaded (with
the registry) on first use::

    from lvae_np.gradcheck import grade
"""
from .engine import (
    DEFAULT_ORDER,
    DEFAULT_STEP,
    DEFAULT_TOL,
    FLOOR,
    FORWARD_ROUNDING,
    KINK_RETRIES,
    STENCILS,
    ArgumentReport,
    GradcheckReport,
    GradientError,
    NumericalGradient,
    argument_names,
    assert_gradients,
    backward_problem,
    check_gradients,
    kink_sides,
    numerical_gradient,
    random_like,
    with_positional_params,
)

__all__ = [
    "DEFAULT_ORDER", "DEFAULT_STEP", "DEFAULT_TOL", "FLOOR", "FORWARD_ROUNDING",
    "KINK_RETRIES", "STENCILS", "ArgumentReport", "GradcheckReport", "GradientError",
    "NumericalGradient", "argument_names", "assert_gradients", "backward_problem", "check_gradients",
    "kink_sides", "numerical_gradient", "random_like", "with_positional_params",
    "grade", "GradeReport",
]

LAZY = ("grade", "GradeReport")  # the autograder's names, loaded on first use


def __getattr__(name):
    if name in LAZY:
        from . import grading

        return getattr(grading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
