"""Gradient checks: the checker (``engine``), the registered cases (``cases``) and the CLI.

The package runs one way: ``__main__`` (``python -m lvae_np.gradcheck``) uses
``cases``, which uses ``engine``; the engine uses nothing of lvae_np but its
array helpers. Importing ``lvae_np.gradcheck`` loads only the engine, whose
public names it re-exports::

    from lvae_np.gradcheck import assert_gradients, check_gradients
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
    check_gradients,
    kink_sides,
    numerical_gradient,
    random_like,
    with_positional_params,
)

__all__ = [
    "DEFAULT_ORDER", "DEFAULT_STEP", "DEFAULT_TOL", "FLOOR", "FORWARD_ROUNDING",
    "KINK_RETRIES", "STENCILS", "ArgumentReport", "GradcheckReport", "GradientError",
    "NumericalGradient", "argument_names", "assert_gradients", "check_gradients",
    "kink_sides", "numerical_gradient", "random_like", "with_positional_params",
]
