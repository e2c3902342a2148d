"""What a GPU would pay for a training step: array operations (kernel launches) and host syncs.

On CuPy every array operation is at least one kernel launch of several
microseconds, and every transfer of a value to the host (``float(x)``,
``bool(x)``, ``x.item()``, ``numpy.asarray(x)``) waits for the device. A
step's cost there is set by how many of each it makes, whatever the
arithmetic. This script counts them without a GPU: it runs the step on
``Counted`` arrays, NumPy arrays behind a namespace that counts every call.

Counted separately:

* ``kernels``: operations that compute a new array or write one (arithmetic,
  in-place updates, reductions, ``concat``, ``astype``, creating filled
  arrays); on CuPy each is a kernel launch (matrix products are cuBLAS calls);
* ``views``: ``reshape``, ``expand_dims``, ``broadcast_to``, slicing and
  transposes, which CuPy does without a kernel;
* ``syncs``: device-to-host transfers.

Run ``python benchmarks/op_count.py`` for the paper's 5-layer LVAE and VAE;
``tests/test_op_counts.py`` pins the numbers so that a change shows.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy

VIEWS = {"reshape", "expand_dims", "broadcast_to", "permute_dims", "squeeze"}
FREE = {"finfo", "iinfo", "isdtype", "result_type", "can_cast"}  # no array work at all


class Counter:
    """Tallies of kernels, views and syncs, and the kernels by operation name."""

    def __init__(self):
        self.kernels = 0
        self.views = 0
        self.syncs = 0
        self.by_name = collections.Counter()
        self.by_function = collections.Counter()  # lvae_np's "module.function" -> kernels
        self.namespace = CountingNamespace(self)  # one object: namespace() compares identity

    def kernel(self, name: str) -> None:
        self.kernels += 1
        self.by_name[name] += 1
        self.by_function[_caller()] += 1

    def view(self) -> None:
        self.views += 1

    def sync(self) -> None:
        self.syncs += 1


def _caller() -> str:
    """The innermost lvae_np function on the stack, as "module.function"."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("lvae_np."):
            return f"{module[len('lvae_np.'):]}.{frame.f_code.co_name}"
        frame = frame.f_back
    return "(outside lvae_np)"


def _unwrap(obj):
    if isinstance(obj, Counted):
        return obj.a
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o) for o in obj)
    return obj


class CountingNamespace:
    """NumPy's namespace, counting each function call and wrapping its array results."""

    def __init__(self, counter: Counter):
        self._counter = counter

    def wrap(self, value):
        if isinstance(value, (numpy.ndarray, numpy.generic)):
            return Counted(numpy.asarray(value), self._counter)
        if isinstance(value, tuple):
            return tuple(self.wrap(v) for v in value)
        return value

    def __getattr__(self, name):
        target = getattr(numpy, "concatenate" if name == "concat" else name)
        if not callable(target) or isinstance(target, type):
            return target  # dtypes, constants

        def call(*args, **kwargs):
            if name in VIEWS:
                self._counter.view()
            elif name == "asarray" and not isinstance(args[0], Counted):
                self._counter.kernel("host->device")
            elif name == "asarray" and not kwargs.get("copy"):
                return args[0]  # no copy asked: the same array
            elif name not in FREE:
                self._counter.kernel(name)
            if name == "astype":
                return self.wrap(_unwrap(args[0]).astype(*_unwrap(args[1:]), **kwargs))
            kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
            kwargs.pop("device", None)
            if name == "asarray":
                kwargs.pop("copy", None)
                out = numpy.array(_unwrap(args[0]), copy=True, **kwargs)
                return self.wrap(out)
            return self.wrap(target(*_unwrap(args), **kwargs))
        return call


def _binary(name, op, reflected=False):
    def method(self, other):
        self._counter.kernel(name)
        a, b = self.a, _unwrap(other)
        return self._wrap(op(b, a) if reflected else op(a, b))
    return method


def _inplace(name, op):
    def method(self, other):
        self._counter.kernel(name)
        op(self.a, _unwrap(other), out=self.a)
        return self
    return method


class Counted:
    """A NumPy array whose every operation is counted (see the module docstring)."""

    __array_priority__ = 1000

    def __init__(self, a: numpy.ndarray, counter: Counter):
        self.a = a
        self._counter = counter

    def _wrap(self, value):
        return Counted(numpy.asarray(value), self._counter)

    def __array_namespace__(self, api_version=None):
        return self._counter.namespace

    # what the array API gives without work
    shape = property(lambda self: self.a.shape)
    dtype = property(lambda self: self.a.dtype)
    ndim = property(lambda self: self.a.ndim)
    size = property(lambda self: self.a.size)
    device = property(lambda self: "counted")

    @property
    def T(self):
        self._counter.view()
        return self._wrap(self.a.T)

    @property
    def mT(self):
        self._counter.view()
        return self._wrap(numpy.swapaxes(self.a, -1, -2))

    def __getitem__(self, key):
        self._counter.view()
        return self._wrap(self.a[_unwrap(key)])

    def __setitem__(self, key, value):
        self._counter.kernel("setitem")
        self.a[_unwrap(key)] = _unwrap(value)

    # device -> host
    def __float__(self):
        self._counter.sync()
        return float(self.a)

    def __int__(self):
        self._counter.sync()
        return int(self.a)

    def __bool__(self):
        self._counter.sync()
        return bool(self.a)

    def __array__(self, dtype=None, copy=None):
        self._counter.sync()
        return self.a if dtype is None else self.a.astype(dtype)

    def item(self):
        self._counter.sync()
        return self.a.item()

    def __neg__(self):
        self._counter.kernel("negative")
        return self._wrap(-self.a)

    def __abs__(self):
        self._counter.kernel("abs")
        return self._wrap(abs(self.a))

    def __len__(self):
        return len(self.a)


for _name, _op in [("add", numpy.add), ("subtract", numpy.subtract), ("multiply", numpy.multiply),
                   ("divide", numpy.true_divide), ("matmul", numpy.matmul),
                   ("power", numpy.power), ("greater", numpy.greater),
                   ("greater_equal", numpy.greater_equal), ("less", numpy.less),
                   ("less_equal", numpy.less_equal), ("equal", numpy.equal),
                   ("not_equal", numpy.not_equal), ("logical_and", numpy.logical_and),
                   ("logical_or", numpy.logical_or)]:
    dunder = {"divide": "truediv", "greater": "gt", "greater_equal": "ge", "less": "lt",
              "less_equal": "le", "equal": "eq", "not_equal": "ne", "power": "pow",
              "subtract": "sub", "multiply": "mul", "logical_and": "and",
              "logical_or": "or"}.get(_name, _name)
    setattr(Counted, f"__{dunder}__", _binary(_name, _op))
    if _name in ("add", "subtract", "multiply", "divide", "matmul", "power",
                 "logical_and", "logical_or"):
        setattr(Counted, f"__r{dunder}__", _binary(_name, _op, reflected=True))
        setattr(Counted, f"__i{dunder}__", _inplace(_name, _op))


def counted_tree(tree: dict, counter: Counter) -> dict:
    return {k: Counted(numpy.array(v), counter) for k, v in tree.items()}


def count_step(kind: str, *, batch: int = 32, config=None, kl: str = "analytic",
               flat: bool = True) -> Counter:
    """Kernels, views and syncs of one training step, as ``lvae_np.train`` runs it.

    ``loss_and_grads`` with the fast forms of the ops (``Model(fast=True)``,
    as the trainer builds it), in-place Adam and the epoch's running sums
    (``metrics.accumulate``); the loss's NaN check, a host sync, runs every
    25 batches on a GPU and is not part of the step. ``flat=True`` updates
    the parameters as the trainer does, on one flat buffer (``fast.FlatAdam``);
    ``flat=False`` array by array (``fast.adam_update_`` on the dicts).

    The counts do not depend on the batch size; the paper's layer sizes are
    the default (``config`` overrides them).
    """
    from lvae_np.training import metrics
    from lvae_np.backend import get_backend
    from lvae_np.models import Model, ModelConfig
    from lvae_np.fast import FlatAdam, adam_update_
    from lvae_np.optim import adam_init

    model = Model(config or ModelConfig(kind=kind), get_backend("numpy", dtype="float32", seed=0),
                  fast=True)
    params, state = model.init()
    rng = numpy.random.default_rng(0)
    x = (rng.random((batch, model.config.x_dim)) < 0.3).astype(numpy.float32)
    noise = [n.astype(numpy.float32) for n in model.noise(batch)]
    opt = adam_init(params)
    counter = Counter()
    params, state = counted_tree(params, counter), counted_tree(state, counter)
    opt = {k: (counted_tree(v, counter) if isinstance(v, dict) else v) for k, v in opt.items()}
    if flat:
        flat_opt = FlatAdam(params, whole_buffer=True)  # as on a GPU
        params = flat_opt.params
    x = Counted(x, counter)
    noise = [Counted(n, counter) for n in noise]
    sums: dict = {}
    for _ in range(2):  # the second step, where the running sums exist already
        counter.kernels = counter.views = counter.syncs = 0
        counter.by_name.clear()
        counter.by_function.clear()
        loss, grads, stats = model.loss_and_grads(params, state, x, beta=0.5, noise=noise, kl=kl)
        if flat:
            flat_opt.step(grads)
        else:
            adam_update_(params, grads, opt)
        metrics.accumulate(sums, stats, loss, batch)
        state = stats["state"]
    counter.loss = float(loss.a)
    return counter


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Count the array operations (kernel launches on a "
                                            "GPU) and host syncs of one training step.")
    p.add_argument("--top", type=int, default=12, help="show this many operations by count")
    p.add_argument("--per-array", action="store_true",
                   help="Adam array by array (adam_update_ on the dicts), as before flat buffers")
    args = p.parse_args(argv)
    adam = "Adam array by array" if args.per_array else "Adam on one flat buffer"
    for kind in ("lvae", "vae"):
        c = count_step(kind, flat=not args.per_array)
        print(f"{kind.upper()} 5-layer training step (loss_and_grads, {adam}, running sums): "
              f"{c.kernels} kernels, {c.views} views, {c.syncs} syncs")
        print("  by operation: " + ", ".join(f"{n} {k}" for n, k in c.by_name.most_common(args.top)))
        print("  by function:  " + ", ".join(f"{n} {k}"
                                             for n, k in c.by_function.most_common(args.top)))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
