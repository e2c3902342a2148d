"""Running and recording a run: its config, the training loop, checkpoints, logs and commands.

The math lives one level up (``lvae_np.models`` and what it is built from);
this package turns it into runs a person can start, stop and trust:

* ``config``: what defines a run (``TrainConfig``) and the named presets;
* ``trainer``: one run's loop: data, model, Adam, the checkpoint and logs;
* ``checkpoint``, ``runs``, ``runlock``, ``fileio``: the run folder's files,
  written atomically, read back with checks, held by one trainer at a time;
* ``metrics``: what a run measures and records (the test summary, CSV logs);
* ``cli``: what the command lines share (one-line errors, help layout);
* ``options``: the options that set a run's config, defined once for the commands;
* ``train``, ``evaluate``, ``plots``: the commands, run as
  ``python -m lvae_np.train``, ``lvae_np.evaluate`` and ``lvae_np.plots``.
"""
