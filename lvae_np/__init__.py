"""lvae_np: Ladder Variational Autoencoders with hand-written forward and backward passes.

Every differentiable piece is a pair ``out, cache = op_forward(...)`` /
``grads = op_backward(dout, cache)`` (see ``lvae_np.layers``), written in
array-API code that runs on NumPy and CuPy alike (see ``lvae_np.backend``).
"""
__version__ = "0.1.0"
