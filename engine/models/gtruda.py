"""Kind ``gtruda``: the seed's convolutional autoencoder with a prediction head (PyTorch, extra ``nn``).

The network (:class:`~.nn.nets.GtrudaNet`, SEED-NOTEBOOKS §2.2) reads a row's N features as
``code / 4`` (a missing code as 0.5). Each batch trains it as the seed did (§2.3), with two Adam
optimisers:

1. zero both optimisers; ``recon = BCE_sum(reconstruct(encode(x)), x)``, backward, step the
   autoencoder's optimiser (encoder + decoder, ``ae_lr``);
2. ``latent = encode(x)`` without gradient (after that step), ``ŷ = head([latent, x])``,
   ``loss = −Pearson(ŷ, y)`` over the batch (``per_era``: the mean over its eras, in batches of
   whole eras), backward, step the head's optimiser (``head_lr``).

So the reconstruction trains only the encoder and decoder and the prediction loss only the head.
Epochs, validation on held-out eras with BatchNorm in eval mode, early stopping on their per-era
numerai_corr, the holdout rule and Ctrl-C are the shared loop's (:mod:`~.nn.loop`). Needs at least
149 features; the reconstruction is cropped or padded to N (:mod:`~.nn.nets`). Saved as
``model_<target>.npz`` (the state dict).
"""

from __future__ import annotations

import torch
from torch import nn

from .nn.data import Batch
from .nn.loop import COMMON_DEFAULTS, Cast, NetworkKind, Step, negative_pearson, number_in, widths
from .nn.nets import GTRUDA_HEAD, GtrudaNet, check_gtruda_features

# The seed's recipe (SEED-NOTEBOOKS §2.3) was batches of 2^15 rows at 310 features, Adam 3e-4 (autoencoder) and
# 1e-2 (head), 200 epochs (``SEED_RECIPE``). The defaults take smaller batches and a gentler head: at 2376
# features a batch row holds ~0.4 MiB of activations on the CPU (2^15 rows: ~13 GiB), and on planted-signal data
# (benches/nn_kinds.py) the seed's head rate overfitted noise within a few steps.
DEFAULTS = {**COMMON_DEFAULTS, "batch_size": 2048, "head": list(GTRUDA_HEAD), "ae_lr": 3e-4, "head_lr": 1e-3}
SEED_RECIPE = {"batch_size": 32768, "head_lr": 1e-2, "epochs": 200}  # --params for the seed's own training


def gtruda_step(net: GtrudaNet, cast: Cast, ae_lr: float, head_lr: float, per_era: bool) -> Step:
    """The seed's training step on one batch (the module docstring's steps 1–2)."""
    ae_opt = torch.optim.Adam([*net.encoder.parameters(), *net.decoder.parameters()], lr=ae_lr)
    head_opt = torch.optim.Adam(net.head.parameters(), lr=head_lr)

    def step(batch: Batch) -> None:
        ae_opt.zero_grad(set_to_none=True)
        head_opt.zero_grad(set_to_none=True)
        reconstruction_loss(net, batch.x, cast).backward()
        ae_opt.step()
        head_loss(net, batch, cast, per_era).backward()
        head_opt.step()

    return step


def reconstruction_loss(net: GtrudaNet, x: torch.Tensor, cast: Cast) -> torch.Tensor:
    """``BCE_sum(reconstruct(encode(x)), x)`` (float32, outside autocast: BCE is not autocast-safe)."""
    with cast():
        recon = net.reconstruct(net.encode(x))
    return nn.functional.binary_cross_entropy(recon.float(), x, reduction="sum")


def head_loss(net: GtrudaNet, batch: Batch, cast: Cast, per_era: bool) -> torch.Tensor:
    """``−Pearson(head([encode(x), x]), y)``, the encoder run without gradient: only the head learns from it."""
    with cast():
        with torch.no_grad():
            latent = net.encode(batch.x)
        pred = net.predict_from(latent, batch.x)
    return negative_pearson(pred.float(), batch.y, batch.era if per_era else None)


class GtrudaKind(NetworkKind):
    """The seed's GTRUDA: a convolutional autoencoder and an MLP head on its latent and the raw features."""

    name = "gtruda"
    DEFAULTS = DEFAULTS

    def check_own(self, settings: dict) -> dict:
        return {**settings, "head": widths(self.name, "head", settings["head"]),
                "ae_lr": number_in(self.name, "ae_lr", settings["ae_lr"], 0.0, open_low=True),
                "head_lr": number_in(self.name, "head_lr", settings["head_lr"], 0.0, open_low=True)}

    def check_features(self, n_features: int) -> None:
        check_gtruda_features(n_features)

    def make_net(self, n_features: int, settings: dict) -> GtrudaNet:
        return GtrudaNet(n_features, tuple(settings["head"]))

    def make_step(self, net: GtrudaNet, cast: Cast, settings: dict) -> Step:
        return gtruda_step(net, cast, settings["ae_lr"], settings["head_lr"], settings["per_era"])


KIND = GtrudaKind()
