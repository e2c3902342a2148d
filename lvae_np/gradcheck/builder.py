"""What a gradient-check case is, and the builders of its inputs: shared by every case module.

A ``Case`` bundles an op's forward and backward with a seeded maker of
well-conditioned float64 inputs, the cases it is built on (``uses``) and its
points in a course; ``composite_case`` turns an op whose parameters come as
dicts (a block, a head, a model's step) into one. A case calls the package's
functions through their modules (``late``), so replacing a module's function
reaches the case and every composite built on it: ``grade(using=...)``
replaces a case's own functions (``Case.functions``) while it is checked,
and ``grade(..., together=True)`` all of them at once. The registry itself is
``cases.py``.
"""
from __future__ import annotations

import functools
import importlib
import re
from dataclasses import KW_ONLY, dataclass
from typing import Callable

import numpy

from .. import blocks
from ..backend import namespace
from .engine import (
    DEFAULT_STEP,
    DEFAULT_TOL,
    GradcheckReport,
    argument_names,
    check_gradients,
    with_positional_params,
)

KINDS = ("op", "composite", "model")
NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9.-]*")  # one word on a command line
POINTS = {"op": 2, "composite": 2, "model": 3}   # a case's registry weight unless it says


class Late:
    """A function of an lvae_np module, looked up in its module at every call.

    ``Late(layers.dense_backward)`` calls whatever ``layers.dense_backward`` is
    when called, so a function put in its place (by ``grade(using=...)``) is
    the one a case checks. ``__wrapped__`` is the function there now, so
    ``inspect.signature`` and ``inspect.unwrap`` see through it.
    """

    def __init__(self, function: Callable):
        self.module = function.__module__
        self.__name__ = self.__qualname__ = function.__name__

    @property
    def key(self) -> str:
        """``"layers.dense_backward"``: the name ``grade(using=...)`` replaces it by."""
        return f"{self.module.removeprefix('lvae_np.')}.{self.__name__}"

    @property
    def __wrapped__(self) -> Callable:
        return getattr(importlib.import_module(self.module), self.__name__)

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Late({self.key})"


def late(function):
    """``function`` as a Late when it is a module-level function of lvae_np, else itself.

    A ``functools.partial`` of such a function keeps its settings around a Late.
    """
    if isinstance(function, functools.partial):
        inner = late(function.func)
        return function if inner is function.func else functools.partial(
            inner, *function.args, **function.keywords)
    module = getattr(function, "__module__", None) or ""
    name = getattr(function, "__name__", "")
    if (module.startswith("lvae_np.") and not isinstance(function, Late)
            and getattr(importlib.import_module(module), name, None) is function):
        return Late(function)
    return function


def late_of(function):
    """The Late inside ``function`` (through partials and ``__wrapped__``), or None."""
    while function is not None and not isinstance(function, Late):
        if isinstance(function, functools.partial):
            function = function.func
        else:
            function = function.__dict__.get("__wrapped__") if hasattr(function, "__dict__") else None
    return function


@dataclass(frozen=True)
class Case:
    """One forward/backward pair to check, with the inputs to check it at.

    Attributes:
        name: short and unique, typed on the command line (``batchnorm-eval``).
        forward: ``forward(*inputs) -> (out, cache)``, its settings bound.
        backward: ``backward(dout, cache) -> grads``, one per input, same order.
        make_inputs: ``rng -> list`` of float64 NumPy arrays, the inputs.
        module: the lvae_np module the pair comes from (``"layers"``).
        kind: ``"op"``, ``"composite"`` (built from ops, such as the blocks of
            blocks.py; parameters as dicts) or ``"model"`` (a whole VAE or LVAE).
        title: what is checked, in words (shown by ``--list -v``).
        names: argument names shown in reports (default: forward's parameter names).
        step: finite-difference step.
        uses: the names of the registered cases whose ops this one calls
            (directly; theirs follow). The autograder checks those first and
            reports this case "blocked" when one of them fails.
        points: its registry weight (default by kind, POINTS): what it is worth to
            ``grade(..., everything=True)`` (``--grade --all``) when no assignment
            grades it. The course's points are the point table's (``points.py``),
            which overrides this for every case an assignment grades.
        course: part of the course's grading (``grade(everything=True)``, and the
            groups ``all``, ``ops``...); False for the cases of the original
            code's options, which the checker runs but a course does not assign.

    ``forward`` and ``backward``, when they are functions of an lvae_np
    module (or partials of one), are kept as ``Late`` references.
    """

    name: str
    forward: Callable
    backward: Callable
    make_inputs: Callable
    _: KW_ONLY
    module: str
    kind: str = "op"
    title: str = ""
    names: tuple = ()
    step: float = DEFAULT_STEP
    uses: tuple = ()
    points: int = 0
    course: bool = True

    def __post_init__(self):
        object.__setattr__(self, "forward", late(self.forward))
        object.__setattr__(self, "backward", late(self.backward))
        object.__setattr__(self, "uses", tuple(self.uses))
        if not self.points:
            object.__setattr__(self, "points", POINTS.get(self.kind, 1))

    def functions(self) -> tuple:
        """The case's own functions, ``("layers.batchnorm_forward", "layers.batchnorm_backward")``.

        The backward's module function and its ``_forward`` partner; empty for a
        case whose backward is no module function (a whole model). These, and
        only these, are taken from ``grade``'s ``using`` when the case is graded
        on its own.
        """
        backward = late_of(self.backward)
        if backward is None:
            return ()
        forward = backward.key.removesuffix("_backward") + "_forward"
        return (forward, backward.key)

    def inputs(self, seed: int = 0, xp=numpy) -> list:
        """The inputs for ``seed``, as float64 arrays of namespace ``xp``."""
        rng = numpy.random.default_rng(seed)
        return [xp.asarray(a, dtype=xp.float64) for a in self.make_inputs(rng)]

    def input_names(self) -> list:
        """The name of each input, as the reports show them."""
        return list(self.names) or argument_names(self.forward, len(self.inputs()))

    def check(self, seed: int = 0, tol: float = DEFAULT_TOL, xp=numpy,
              max_elements: int | None = None) -> GradcheckReport:
        """Gradient-check the case at ``self.inputs(seed, xp)``.

        Args:
            seed: seed of the inputs and of the upstream gradient.
            tol: largest acceptable relative error.
            xp: the array namespace to check on (NumPy, CuPy, array_api_strict).
            max_elements: check at most this many elements of each input.

        Returns:
            the GradcheckReport (see ``check_gradients``).
        """
        return check_gradients(self.forward, self.backward, self.inputs(seed, xp),
                               names=self.names or None, op=self.name, tol=tol, seed=seed,
                               h=self.step, max_elements=max_elements)


# ----------------------------------------------------------------------------
# Input builders
# ----------------------------------------------------------------------------
def normal_input(shape):
    """rng -> [x], one standard-normal input of ``shape``."""
    return lambda rng: [rng.normal(size=shape)]


def variances(rng, shape=(5, 4)):
    # Variances well above gaussian.VAR_FLOOR, so the floor is never near.
    return rng.uniform(0.5, 2.0, size=shape)


def running_averages(dims) -> list:
    """A fixed, seeded batch-norm state per layer width: (mean, var) NumPy pairs."""
    rng = numpy.random.default_rng(1234)
    return [(rng.normal(size=d), rng.uniform(0.5, 2.0, d)) for d in dims]


MLP_SIZES = (5, 4, 3)  # the MLP block's widths (in, h1, h2)


def composite_case(name: str, forward: Callable, backward: Callable, make_arrays: Callable,
                   params: dict, *, names: tuple, module: str = "blocks",
                   title: str = "", uses: tuple = (), points: int = 0,
                   course: bool = True) -> Case:
    """An op taking arrays, then dicts of parameters (a block, a head, a step), as a case.

    Args:
        name: as in Case.
        forward: ``forward(*arrays, *dicts) -> (out, cache)``, its settings bound.
        backward: ``backward(dout, cache) -> (*array_grads, *dict_grads)``.
        make_arrays: ``rng -> list`` of the plain arrays (NumPy float64).
        params: for each dict in order, its argument's name -> ``init(rng)``,
            the dict at initialisation (NumPy float64 arrays).
        names: the plain arrays' names.
        module, title, uses, points: as in Case.

    Returns:
        a Case whose inputs are the arrays, then each dict's parameters in
        sorted key order, moved off their initial values by N(0, 0.2^2) noise
        (biases and beta start at zero, gamma at one: too special a point to
        check at). A parameter's name in reports is its key, with its dict's
        name in front (``head.W_mu``) when there are several dicts.
    """
    inits = list(params.values())
    groups = [sorted(init(numpy.random.default_rng(0))) for init in inits]
    fwd, bwd = with_positional_params(late(forward), late(backward), *groups, arrays=len(names))

    def make_inputs(rng):
        inputs = list(make_arrays(rng))
        for init, keys in zip(inits, groups):
            p = init(rng)
            inputs += [p[k] + 0.2 * rng.normal(size=p[k].shape) for k in keys]
        return inputs

    param_names = [f"{arg}.{k}" if len(groups) > 1 else k
                   for arg, keys in zip(params, groups) for k in keys]
    return Case(name, fwd, bwd, make_inputs, module=module, kind="composite", title=title,
                names=tuple(names) + tuple(param_names), uses=uses, points=points,
                course=course)


def mlp_state(like, widths=MLP_SIZES[1:]) -> dict:
    """A fixed, seeded MLP-block state (``mean{j}``, ``var{j}``), in ``like``'s namespace, dtype."""
    xp = namespace(like)
    state = {}
    for j, (mean, var) in enumerate(running_averages(widths), start=1):
        state[f"mean{j}"] = xp.asarray(mean, dtype=like.dtype)
        state[f"var{j}"] = xp.asarray(var, dtype=like.dtype)
    return state


def init_mlp_params(batch_norm: bool):
    return lambda rng: blocks.init_mlp(rng, MLP_SIZES, batch_norm=batch_norm, xp=numpy,
                                         dtype=numpy.float64)[0]


def init_head_params(d_in: int, d_out: int):
    return lambda rng: blocks.init_gaussian_head(rng, d_in, d_out, xp=numpy,
                                                   dtype=numpy.float64)
