"""lvae_np: Ladder Variational Autoencoders with hand-written forward and backward passes.

Every differentiable piece is a pair ``out, cache = op_forward(...)`` /
``grads = op_backward(dout, cache)`` (the contract is stated once, in
``lvae_np.layers``), written in array-API code that runs on NumPy and CuPy
alike (``lvae_np.backend``).

Reading order: the math, each module built from the ones before it.

1. ``layers``: dense, batch norm, leaky ReLU, softplus.
2. ``gaussian``: sampling, the ladder merge, KL and log-density of diagonal Gaussians.
3. ``likelihoods``: log p(x | z_1), Bernoulli or Gaussian.
4. ``blocks``: the MLP block and the Gaussian head built from those layers.
5. ``steps``: one layer of a model (the ladder step, the VAE's steps, the
   output), then each model's per-sample pass, a loop over its steps.
6. ``variants``: the released code's variants, each beside the paper's step
   it replaces.
7. ``models``: the VAE and the LVAE: parameters, forward, backward, sampling.
8. ``bounds``: warm-up, the importance-weighted bound and L_k.
9. ``optim``: Adam and gradient clipping.

Beside them: ``backend`` (NumPy or CuPy, dtype, random numbers),
``architecture`` (a model's parameter names, shapes and initial values),
``fast`` (the fused and in-place twins of plain forms above, which training
runs: ``Model(fast=True)``), ``flat`` (one buffer for many arrays, for Adam).

The machinery is in subpackages: ``training`` (a run's config, loop,
checkpoints, logs and the commands ``python -m lvae_np.train``,
``lvae_np.evaluate``, ``lvae_np.plots``), ``data`` (the datasets),
``experiments`` (the paper's comparisons), ``gradcheck`` (the gradient
checker and autograder) and ``course`` (the course kit).
"""
__version__ = "0.1.0"
