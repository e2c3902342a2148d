"""Stand-in for ``cupy.random``: NumPy's generators behind CuPy's names and signatures.

``default_rng(seed)`` gives a ``Generator`` drawing from
``numpy.random.Generator(numpy.random.PCG64(seed))`` (real CuPy uses XORWOW
on the GPU: the numbers differ, the API does not). The legacy functions
(``seed``, ``rand``, ``normal``, ``permutation``...) use one private
``numpy.random.RandomState`` that ``seed()`` reseeds. Results are arrays "on
the device"; no host traffic is counted for them.
"""
from __future__ import annotations

import numpy as _np

from . import _api, _core
from ._namespace import implement

_ALIASES = {"ranf": "random_sample", "sample": "random_sample"}


def _draw(where: str, np_method, sig, np_sig, args, kwargs):
    """Bind to CuPy's signature, then draw with NumPy.

    ``dtype=`` and ``out=`` that NumPy's method lacks are done here: a cast,
    and a copy into ``out`` (which must be a stand-in array).
    """
    bound = _core.bind(sig, args, kwargs, where)
    _core.check_params(bound, where)
    np_names = set(np_sig.parameters) if np_sig is not None else set()
    call_args, call_kwargs = _core.realign(sig, np_sig, bound, args, kwargs)
    if call_args and bound is not None and "self" in bound.arguments:
        call_args = call_args[1:]
    dtype = call_kwargs.pop("dtype", None) if "dtype" not in np_names else None
    out = call_kwargs.pop("out", None) if "out" not in np_names else None
    by_id: dict = {}
    call_args = _core.unwrap(call_args, where, by_id)
    call_kwargs = {k: _core.unwrap(v, where, by_id) for k, v in call_kwargs.items()}
    result = np_method(*call_args, **call_kwargs)
    if dtype is not None:
        result = _np.asarray(result).astype(dtype, copy=False)
    if out is not None:
        _np.copyto(out._a, result)
        return out
    return _core.wrap_result(result, by_id)


class _BitGenerator:
    """The stand-in's bit generator: NumPy's PCG64 (not a public CuPy name)."""

    def __init__(self, seed=None):
        self.numpy = _np.random.PCG64(seed)


def _generator_method(name: str, entry: dict):
    sig = _api.signature(entry)
    np_method = getattr(_np.random.Generator, name)
    np_sig = _core.numpy_signature(np_method)
    where = f"cupy.random.Generator.{name}"

    def method(self, *args, **kwargs):
        return _draw(where, getattr(self._numpy, name), sig, np_sig, (self,) + args, kwargs)

    return _core.finish(method, "cupy.random", name, sig, np_method)


class Generator:
    """Stand-in for ``cupy.random.Generator``, drawing with NumPy's PCG64."""

    __module__ = "cupy.random._generator_api"

    def __init__(self, bit_generator):
        if not isinstance(bit_generator, _BitGenerator):
            raise TypeError("the CuPy stand-in's Generator takes the bit generator "
                            "of cupy.random.default_rng(seed) only")
        self._bit_generator = bit_generator
        self._numpy = _np.random.Generator(bit_generator.numpy)


for _name, _entry in _api.members("cupy.random.Generator").items():
    if _entry["kind"] == "method" and hasattr(_np.random.Generator, _name):
        setattr(Generator, _name, _generator_method(_name, _entry))
_api.check_class(Generator, "cupy.random.Generator")


@implement("cupy.random")
def default_rng(seed=None):
    """A ``Generator`` seeded with ``seed`` (NumPy's PCG64 underneath); a Generator as is."""
    if isinstance(seed, Generator):
        return seed
    return Generator(_BitGenerator(seed))


_state = _np.random.RandomState()


@implement("cupy.random")
def seed(seed=None):
    """Reseed the legacy functions' generator."""
    _state.seed(None if seed is None else _core.unwrap(seed, "cupy.random.seed"))


def _legacy_function(name: str, entry: dict):
    np_name = _ALIASES.get(name, name)
    if not hasattr(_np.random.RandomState, np_name):
        return None
    sig = _api.signature(entry)
    np_sig = _core.numpy_signature(getattr(_np.random.RandomState, np_name))
    if np_sig is not None and "self" in np_sig.parameters:
        np_sig = np_sig.replace(parameters=list(np_sig.parameters.values())[1:])
    where = f"cupy.random.{name}"

    def function(*args, **kwargs):
        return _draw(where, getattr(_state, np_name), sig, np_sig, args, kwargs)

    return _core.finish(function, "cupy.random", name, sig, getattr(_np.random, np_name, None))


def _implemented() -> dict:
    out = {"Generator": Generator, "default_rng": default_rng, "seed": seed}
    for name, entry in _api.names("cupy.random").items():
        if name not in out and entry["kind"] == "function":
            function = _legacy_function(name, entry)
            if function is not None:
                out[name] = function
    return out


_api.publish(globals(), "cupy.random", _implemented())
