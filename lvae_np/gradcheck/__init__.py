"""Gradient checks: the checker (``engine``), the registered cases (``cases``), the autograder and the CLI.

The package runs one way: ``__main__`` (``python -m lvae_np.gradcheck``) uses
``grading`` (the autograder) and ``cases``, which use ``engine``; the engine
uses nothing of lvae_np but its array helpers. Importing ``lvae_np.gradcheck``
loads only the engine, whose public names it re-exports::

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
