"""``python -m lvae_np.evaluate``: the evaluation command, whose code is in ``lvae_np/training/evaluate.py``."""
import sys

from .training import evaluate as _command

if __name__ == "__main__":
    sys.exit(_command.main())
sys.modules[__name__] = _command   # ``import lvae_np.evaluate`` gives lvae_np.training.evaluate itself
