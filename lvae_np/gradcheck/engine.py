"""The gradient checker: numerical gradients and a report for any forward/backward pair.

For a course: copy an op, blank its backward, and let students fill it in;
then::

    from lvae_np.gradcheck import assert_gradients
    assert_gradients(dense_forward, dense_backward, [x, W, b])

passes silently when every gradient is right, and otherwise raises
``GradientError`` naming the wrong argument, its largest relative error, the
index where it occurs and both values there. A composite whose parameters come
as a dict (``mlp_forward(x, p, ...)``) is checked through
``with_positional_params``, which gives each parameter its own argument.

How a check works (``check_gradients``):

1. Inputs must be float64: in float32 the finite differences are too coarse
   to tell a right gradient from a slightly wrong one, so float32 is refused.
2. A random upstream gradient G is drawn (never all ones: batch norm's input
   gradient vanishes for a constant G, which would hide any bug there).
3. The analytic side is ``backward(G, cache)``. The numerical side perturbs
   one input element at a time and differentiates the scalar <G, out> by
   central differences of order 4 (order 2, the textbook form, on request).
   The outputs are combined elementwise before the dot product with G, which
   keeps the rounding error of the difference small.
4. Per argument: the largest relative error |a - n| / max(|a|, |n|, floor),
   and the index where it occurs. floor = max(1e-6 * max|n|, noise / tol):
   an element a million times smaller than the gradient's largest, or so
   small that the rounding error ``noise`` of its finite difference is a
   sizeable part of it, is judged on that absolute scale instead.
   Kinks: where a stencil crosses the kink of a piecewise op (leaky ReLU), the
   step is shrunk until it does not (see ``numerical_gradient``).
5. The contract itself: gradient shapes and dtypes equal the inputs'; a zero
   upstream gradient gives exactly zero gradients; backward run twice gives
   identical results; neither pass changes its inputs, ``dout`` or the cache.

This module needs nothing of lvae_np but its array helpers, so it can be
handed to students on its own. The registered cases of lvae_np are in
``lvae_np.gradcheck.cases``; ``python -m lvae_np.gradcheck`` checks them and
prints a table.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, NamedTuple, Sequence

import numpy

from ..backend import is_array, namespace, to_numpy

DEFAULT_TOL = 1e-6   # largest acceptable relative error, in float64
DEFAULT_ORDER = 4    # accuracy order of the central differences (see STENCILS)
DEFAULT_STEP = 1e-4  # finite-difference step h (order 4 keeps its truncation error ~h^4)
FLOOR = 1e-6         # relative errors are taken against at least FLOOR * max|numerical|
# Rounding in one forward pass, relative to the size of its outputs (machine
# epsilon is 2.2e-16; a forward pass of many operations rounds a few times over).
FORWARD_ROUNDING = 8 * 2.0**-52


class GradientError(AssertionError):
    """A gradient check failed; the message names the argument, error and index."""


@dataclass
class ArgumentReport:
    """The check of one argument's gradient."""

    name: str
    max_rel_error: float = math.nan
    index: tuple = ()
    analytic: float = math.nan   # the analytic gradient where the error is largest
    numerical: float = math.nan  # the numerical gradient there
    problems: list = field(default_factory=list)  # contract violations (shape, dtype...)
    tol: float = DEFAULT_TOL
    shrunk: int = 0      # elements checked with a smaller step, to step off a kink
    on_kink: list = field(default_factory=list)  # elements on a kink: not judged

    @property
    def passed(self) -> bool:
        return not self.problems and self.max_rel_error <= self.tol

    def describe(self) -> str:
        if self.problems:
            return f"gradient of {self.name!r}: " + "; ".join(self.problems)
        text = (f"gradient of {self.name!r}: max relative error {self.max_rel_error:.3g} "
                f"at index {self.index} (analytic {self.analytic:.6g}, numerical "
                f"{self.numerical:.6g}; tolerance {self.tol:g})")
        if self.on_kink:
            text += f"; {len(self.on_kink)} element(s) on a kink not judged"
        return text


@dataclass
class GradcheckReport:
    """All that one check found: per-argument results and contract violations."""

    op: str
    arguments: list
    problems: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and all(a.passed for a in self.arguments)

    def failures(self) -> list:
        return list(self.problems) + [a.describe() for a in self.arguments if not a.passed]

    def __str__(self) -> str:
        lines = [f"{self.op}: " + ("ok" if self.passed else "FAILED")]
        lines += ["  " + a.describe() for a in self.arguments]
        lines += ["  " + p for p in self.problems]
        return "\n".join(lines)


# ----------------------------------------------------------------------------
# Small helpers that work on any array-API array
# ----------------------------------------------------------------------------
def _as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _copy(a):
    return namespace(a).asarray(a, copy=True)


def _identical(a, b) -> bool:
    xp = namespace(a)
    return a.shape == b.shape and a.dtype == b.dtype and bool(xp.all(a == b))


def _nested_arrays(obj):
    """Every array inside a cache (NamedTuples, tuples, lists, dicts nest)."""
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _nested_arrays(item)
    elif is_array(obj) and hasattr(obj, "shape"):   # as namespace() sees arrays: CuPy's too
        yield obj


def _unravel(flat: int, shape: tuple) -> tuple:
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return tuple(reversed(index))


def argument_names(forward: Callable, count: int) -> list:
    """Names of the first ``count`` positional parameters of ``forward``, when it has them."""
    try:
        params = [p for p in inspect.signature(forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params if p.kind != p.VAR_POSITIONAL][:count]
    return names + [f"arg{i}" for i in range(len(names), count)]


def random_like(out, rng: numpy.random.Generator):
    """A standard-normal array (or tuple of arrays) shaped like ``out``, in its namespace."""
    outs = _as_tuple(out)
    drawn = tuple(namespace(o).asarray(rng.standard_normal(o.shape), dtype=o.dtype) for o in outs)
    return drawn if isinstance(out, (tuple, list)) else drawn[0]


def _dot(outs, douts) -> float:
    return sum(float(namespace(o).sum(o * d)) for o, d in zip(outs, douts))


# ----------------------------------------------------------------------------
# The check
# ----------------------------------------------------------------------------
# Central-difference stencils: (offset in steps h, weight), divided by h.
# Order 2 is the textbook (f(x+h) - f(x-h)) / 2h; order 4 adds two points and
# cancels the h^2 error term, which allows a larger h and so less rounding.
STENCILS = {
    2: ((1, 1 / 2), (-1, -1 / 2)),
    4: ((2, -1 / 12), (1, 8 / 12), (-1, -8 / 12), (-2, 1 / 12)),
}


KINK_RETRIES = 3  # times the step is divided by 10 when a stencil crosses a kink


def kink_sides(cache) -> list:
    """Which side of its kink each input of every piecewise op in ``cache`` lies on.

    A cache opts in by defining ``kink_side()`` (leaky ReLU's does). Caches nest
    through tuples, lists and dicts, as composites build them.
    """
    found = []

    def walk(obj):
        if hasattr(obj, "kink_side"):
            found.append(to_numpy(obj.kink_side()))
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (tuple, list)):
            for v in obj:
                walk(v)

    walk(cache)
    return found


class NumericalGradient(NamedTuple):
    grad: numpy.ndarray   # float64, shaped like the input (NaN where not computed)
    noise: numpy.ndarray  # bound on the rounding error in grad (see numerical_gradient)
    shrunk: int           # elements whose step had to shrink to avoid a kink
    on_kink: list         # indices still crossing a kink at the smallest step (not judged)


def numerical_gradient(forward: Callable, inputs: Sequence, i: int, dout, *,
                       h: float = DEFAULT_STEP, order: int = DEFAULT_ORDER,
                       elements=None) -> NumericalGradient:
    """Central-difference gradient of <dout, forward(*inputs)[0]> with respect to inputs[i].

    For each element x_j: sum_k w_k <dout, out(x + o_k h e_j)> / h, with the
    stencil's offsets o_k and weights w_k (order 2: o = +1, -1 and w = 1/2, -1/2).
    The weighted outputs are summed elementwise before the dot product with
    dout, so no large sum is differenced.

    Kinks. Across a kink (leaky ReLU at 0) a finite difference mixes two slopes
    and is wrong by O(1), however right the analytic gradient. In a network,
    one input element moves every activation downstream, so some stencil
    often crosses some kink. The stencil's points are therefore compared, via
    ``kink_sides`` of their caches, with the unperturbed point; where any op
    changed side, the step is divided by 10 (up to KINK_RETRIES times).

    Rounding. Each output carries a rounding error of about FORWARD_ROUNDING
    times its size, so the estimate itself is uncertain by about
    noise_j = FORWARD_ROUNDING * sum_k |w_k| <|dout|, |out_k|> / h. A difference
    from the analytic gradient below that carries no information.

    Returns a NumericalGradient. With ``elements`` (a sequence of flat
    indices), only those entries are computed; the rest are NaN.
    """
    x = inputs[i]
    work = _copy(x)
    args = list(inputs)
    args[i] = work
    douts = _as_tuple(dout)
    baseline = kink_sides(forward(*inputs)[1])
    grad = numpy.full(x.shape, numpy.nan)
    noise = numpy.zeros(x.shape)
    shrunk, on_kink = 0, []
    for flat in (range(math.prod(x.shape)) if elements is None else elements):
        idx = _unravel(int(flat), x.shape)
        original = float(work[idx])
        step = h
        for attempt in range(KINK_RETRIES + 1):
            total, crossed, size = None, False, 0.0
            for offset, weight in STENCILS[order]:
                work[idx] = original + offset * step
                out, cache = forward(*args)
                outs = [weight * o for o in _as_tuple(out)]  # new arrays
                size += _dot([abs(o) for o in outs], [abs(d) for d in douts])
                total = outs if total is None else [t + o for t, o in zip(total, outs)]
                if baseline and not crossed:
                    sides = kink_sides(cache)
                    crossed = len(sides) != len(baseline) or not all(
                        numpy.array_equal(a, b) for a, b in zip(sides, baseline))
            if not crossed:
                break
            step /= 10
        work[idx] = original
        grad[idx] = _dot(total, douts) / step
        noise[idx] = FORWARD_ROUNDING * size / step
        shrunk += attempt > 0
        if crossed:
            on_kink.append(idx)
    return NumericalGradient(grad, noise, shrunk, on_kink)


def check_gradients(forward: Callable, backward: Callable, inputs: Sequence, *,
                    names: Sequence[str] | None = None, op: str | None = None,
                    tol: float = DEFAULT_TOL, h: float = DEFAULT_STEP, order: int = DEFAULT_ORDER,
                    seed: int = 0, max_elements: int | None = None) -> GradcheckReport:
    """Check ``backward`` against numerical gradients of ``forward`` at ``inputs``.

    Args:
        forward: ``forward(*inputs) -> (out, cache)``; ``out`` an array or a tuple of arrays.
        backward: ``backward(dout, cache) -> grads``, one per input, same order.
        inputs: float64 arrays (NumPy, CuPy or array_api_strict), all differentiable.
        names: argument names for the report (default: forward's parameter names).
        op: the op's name in the report (default: forward's name).
        tol: largest acceptable relative error.
        h: finite-difference step.
        order: accuracy order of the central differences, 4 or 2 (see STENCILS).
        seed: seed of the random upstream gradient (and of sampled elements).
        max_elements: check at most this many randomly chosen elements per argument.

    Returns:
        a GradcheckReport; nothing is raised for a wrong gradient (see assert_gradients).
    """
    inputs = list(inputs)
    names = list(names) if names is not None else argument_names(forward, len(inputs))
    op = op or getattr(forward, "__name__", "op").removesuffix("_forward")
    for name, x in zip(names, inputs):
        xp = namespace(x)
        if x.dtype != xp.float64:
            raise TypeError(
                f"gradient checks need float64 inputs, but {name!r} is {x.dtype}: finite "
                f"differences in single precision cannot resolve errors of {tol:g}. Cast it first: "
                f"{name}.astype(numpy.float64) for a NumPy array (xp.astype({name}, xp.float64) "
                f"in any array namespace).")
    # A stream of its own: an upstream gradient drawn with the same seed as the
    # inputs could be collinear with them (and batch norm projects that out).
    rng = numpy.random.default_rng([seed, 0x6C7661])
    originals = [_copy(x) for x in inputs]
    problems = []

    out, cache = forward(*inputs)
    dout = random_like(out, rng)
    dout_copy = [_copy(d) for d in _as_tuple(dout)]
    cache_arrays = list(_nested_arrays(cache))
    cache_copy = [_copy(a) for a in cache_arrays]
    grads = backward(dout, cache)
    grads = (grads,) if hasattr(grads, "shape") else grads  # one bare array: one input
    problem = backward_problem(grads, names, function_name(backward))
    if problem:  # nothing to compare: say why in one sentence
        return GradcheckReport(op, [], [problem])
    grads = tuple(grads)

    if not all(_identical(a, b) for a, b in zip(_as_tuple(dout), dout_copy)):
        problems.append("backward changed dout")
    if not all(_identical(a, b) for a, b in zip(cache_arrays, cache_copy)):
        problems.append("backward changed the cache")
    if not all(_identical(a, b) for a, b in zip(inputs, originals)):
        problems.append("forward or backward changed an input")
    again = _as_tuple(backward(dout, cache))
    if not all(_identical(a, b) for a, b in zip(grads, again)):
        problems.append("backward run twice gave different results")
    zero = tuple(namespace(o).zeros_like(o) for o in _as_tuple(out))
    zero_grads = _as_tuple(backward(zero if isinstance(out, (tuple, list)) else zero[0], cache))
    if not all(bool(namespace(g).all(g == 0)) for g in zero_grads):
        problems.append("a zero upstream gradient gave non-zero gradients")

    reports = []
    for i, (name, x, g) in enumerate(zip(names, inputs, grads)):
        rep = ArgumentReport(name, tol=tol)
        reports.append(rep)
        if g.shape != x.shape:
            rep.problems.append(f"shape {tuple(g.shape)} differs from the input's {tuple(x.shape)}")
        if g.dtype != x.dtype:
            rep.problems.append(f"dtype {g.dtype} differs from the input's {x.dtype}")
        if rep.problems:
            continue
        size = math.prod(x.shape)
        elements = None
        if max_elements is not None and size > max_elements:
            elements = rng.choice(size, max_elements, replace=False)
        num, noise, rep.shrunk, rep.on_kink = numerical_gradient(
            forward, inputs, i, dout, h=h, order=order, elements=elements)
        ana = to_numpy(g).astype(numpy.float64)
        for idx in rep.on_kink:  # no derivative to compare with on a kink
            num[idx] = numpy.nan
        mask = ~numpy.isnan(num)
        if not mask.any():
            rep.max_rel_error = 0.0
            continue
        floor = max(FLOOR * float(numpy.abs(num[mask]).max()), 1e-300)
        denom = numpy.maximum(numpy.maximum(numpy.abs(ana), numpy.abs(num)), floor)
        # Where the gradient is as small as the rounding of its estimate, the
        # estimate has no relative digits: judge it on the absolute scale noise/tol.
        denom = numpy.maximum(denom, noise / tol)
        rel = numpy.where(mask, numpy.abs(ana - num) / denom, -1.0)
        rel = numpy.where(numpy.isnan(rel), numpy.inf, rel)  # a NaN gradient fails
        worst = numpy.unravel_index(int(numpy.argmax(rel)), rel.shape)
        rep.max_rel_error = float(rel[worst])
        rep.index = tuple(int(k) for k in worst)
        rep.analytic, rep.numerical = float(ana[worst]), float(num[worst])
    return GradcheckReport(op, reports, problems)


def function_name(function: Callable) -> str:
    """The name of the function behind ``function`` (through partials and ``__wrapped__``)."""
    while isinstance(function, partial):
        function = function.func
    try:
        function = inspect.unwrap(function)
    except ValueError:  # a cycle of __wrapped__
        pass
    return getattr(function, "__name__", "backward")


def backward_problem(grads, names: Sequence[str], function: str) -> str | None:
    """One sentence when a backward's result breaks the op contract, else None.

    The contract: a tuple (or list) with one gradient per input, none of them
    None. ``names`` are the inputs' names, ``function`` the backward's name.
    """
    count = f"one gradient per input ({len(names)}: {', '.join(names)})"
    if grads is None:
        return f"{function} returned None: it must return {count}"
    if not isinstance(grads, (tuple, list)):
        return (f"{function} returned a {type(grads).__name__}, not a tuple: it must return "
                f"{count}" + (", e.g. (dx,)" if len(names) == 1 else ""))
    if len(grads) != len(names):
        return f"{function} returned {len(grads)} gradients: it must return {count}"
    missing = [repr(name) for name, g in zip(names, grads) if g is None]
    if missing:
        return f"{function} returned None for {', '.join(missing)}: it must return {count}"
    return None


def assert_gradients(forward: Callable, backward: Callable, inputs: Sequence, **kwargs):
    """Like ``check_gradients``, but raises GradientError when anything is wrong.

    Returns the report when every check passes.
    """
    report = check_gradients(forward, backward, inputs, **kwargs)
    if not report.passed:
        raise GradientError(f"{report.op}: " + "\n".join(report.failures()))
    return report


def with_positional_params(forward: Callable, backward: Callable, *keys: Sequence[str],
                           arrays: int = 1):
    """Adapt an op whose parameters come as dicts to the checker's positional inputs.

    A composite such as ``mlp_forward(x, p)`` takes ``arrays`` plain arrays,
    then one dict of parameters per block. The checker perturbs positional
    inputs, so the adapted pair takes the arrays, then each dict's values in
    the order of its keys, and returns one gradient per positional input::

        fwd, bwd = with_positional_params(gaussian_head_forward, gaussian_head_backward, keys)
        assert_gradients(fwd, bwd, [h] + [p[k] for k in keys], names=["h"] + keys)

    Args:
        forward: ``forward(*arrays, *dicts) -> (out, cache)``.
        backward: ``backward(dout, cache) -> (*array_grads, *dict_grads)``, each
            gradient dict keyed like its parameters.
        *keys: for each dict, its keys in the order of the positional inputs.
        arrays: how many plain arrays come before the dicts.

    Returns:
        ``(forward, backward)`` over positional inputs. The adapted backward
        raises ValueError when a gradient dict has other keys than its parameters.
    """
    groups = [tuple(k) for k in keys]

    def positional_forward(*inputs):
        args, rest = list(inputs[:arrays]), inputs[arrays:]
        for group in groups:
            args.append(dict(zip(group, rest[:len(group)])))
            rest = rest[len(group):]
        return forward(*args)

    def positional_backward(dout, cache):
        grads = backward(dout, cache)
        flat = list(grads[:arrays])
        for group, d in zip(groups, grads[arrays:]):
            if set(d) != set(group):
                raise ValueError(f"backward returned gradients for {sorted(d)}, but the "
                                 f"parameters are {sorted(group)}")
            flat += [d[k] for k in group]
        return tuple(flat)

    # Says which backward is checked (on the backward only: a forward's
    # __wrapped__ would make inspect.signature show the wrapped parameters).
    positional_backward.__wrapped__ = backward
    return positional_forward, positional_backward
