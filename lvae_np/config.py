"""What defines a training run: its config, the named presets, reading it back from a checkpoint.

A run is fully described by one ``TrainConfig``. ``lvae_np.train`` builds it
from the command line, saves it (as a plain JSON dict, ``config_as_dict``) in
the run's ``config.json`` and in every checkpoint's meta record, and
``config_from_meta`` turns that record back into a ``TrainConfig`` for
``--resume``, ``lvae_np.evaluate``, ``lvae_np.plots`` and the experiment
runner.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from .models import PAPER_HIDDEN, PAPER_LATENT, ModelConfig


@dataclass
class TrainConfig:
    """Everything that defines a run (saved in its checkpoint and config.json)."""

    model: str = "lvae"                        # "lvae" or "vae"
    dataset: str = "mnist"                     # one of data.DATASETS
    latent: tuple = PAPER_LATENT               # z_1 .. z_L
    hidden: tuple = PAPER_HIDDEN               # block width under each z_i
    batch_norm: bool = True
    warmup_epochs: int = 200                   # beta rises 0 -> 1 over these (0: none)
    epochs: int = 2000                         # train until this many epochs are done
    batch_size: int = 256
    lr: float = 0.002
    max_grad_norm: float = 0.0                 # clip the total gradient norm (0: no clipping)
    iw_samples: int = 1                        # > 1 trains on the importance-weighted bound
    kl: str = "analytic"                       # "analytic" (where exact) or "mc"
    eval_every: int = 1                        # test ELBO and active units every N epochs
    eval_iw_samples: int = 0                   # also test L_k at evaluations (0: no)
    final_iw_samples: int = 0                  # L_k on the test set when training ends
    validation: int = 0                        # hold out this many training examples
    dtype: str = "float32"
    seed: int = 0
    data_variant: str = ""                     # filled in: which data was actually used

    def model_config(self, x_dim: int, likelihood: str) -> ModelConfig:
        """The model this run trains, for data of ``x_dim`` features and that likelihood."""
        return ModelConfig(kind=self.model, x_dim=x_dim, latent=tuple(self.latent),
                           hidden=tuple(self.hidden), batch_norm=self.batch_norm,
                           likelihood=likelihood)


PRESETS = {
    "paper-mnist": dict(model="lvae", dataset="mnist", latent=PAPER_LATENT,
                        hidden=PAPER_HIDDEN, batch_norm=True, warmup_epochs=200,
                        epochs=2000, batch_size=256, lr=0.002, kl="analytic", iw_samples=1,
                        eval_every=10, final_iw_samples=5000),
}
# Options --resume may change; everything else comes from the run's checkpoint.
RESUMABLE = ("epochs", "eval_every", "eval_iw_samples", "final_iw_samples")


def config_as_dict(cfg: TrainConfig) -> dict:
    """``cfg`` as a JSON-ready dict (tuples as lists), as config.json and checkpoints hold it."""
    return json.loads(json.dumps(asdict(cfg),
                                 default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def config_from_meta(meta: dict) -> TrainConfig:
    """The ``TrainConfig`` saved in a checkpoint's meta record (its ``"config"`` entry).

    Keys this version does not know are ignored, and missing ones take their
    defaults, so checkpoints of older and newer versions still load.

    Raises:
        ValueError: the record has no usable config (one-line message).
    """
    saved = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(saved, dict):
        raise ValueError("the checkpoint's meta record has no run config")
    saved = dict(saved)
    try:
        for key in ("latent", "hidden"):
            if key in saved:
                saved[key] = tuple(saved[key])
    except TypeError:
        raise ValueError("the checkpoint's run config has malformed layer sizes") from None
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in saved.items() if k in known})
