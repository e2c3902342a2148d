"""``python -m lvae_np.plots``: the figures command, whose code is in ``lvae_np/training/plots.py``."""
import sys

from .training import plots as _command

if __name__ == "__main__":
    sys.exit(_command.main())
sys.modules[__name__] = _command   # ``import lvae_np.plots`` gives lvae_np.training.plots itself
