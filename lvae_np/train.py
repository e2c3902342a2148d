"""``python -m lvae_np.train``: the training command, whose code is in ``lvae_np/training/train.py``."""
import sys

from .training import train as _command

if __name__ == "__main__":
    sys.exit(_command.main())
sys.modules[__name__] = _command   # ``import lvae_np.train`` gives lvae_np.training.train itself
