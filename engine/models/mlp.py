"""Kind ``mlp``: a dense network (PyTorch, extra ``nn``), the write-up's MLP (SEED-NOTEBOOKS §3.2 B5).

:class:`~.nn.nets.DenseNet`: ``Linear → ReLU → Dropout`` per width (``widths``, default 512, 256,
128, 64; ``dropout`` 0.1), then ``Linear → 1``, on a row's features as ``code / 4`` (a missing code
as 0.5). One Adam optimiser (``lr``, ``weight_decay``: an L2 penalty) minimises the ``loss``:
``"mse"`` (mean squared error to the target) or ``"pearson"`` (``−Pearson(ŷ, y)`` over the batch;
``per_era``: the mean over its eras, in batches of whole eras). Epochs, validation on held-out
eras, early stopping on their per-era numerai_corr, the holdout rule and Ctrl-C are the shared
loop's (:mod:`~.nn.loop`). Saved as ``model_<target>.npz`` (the state dict).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from .nn.data import Batch
from .nn.loop import COMMON_DEFAULTS, Cast, NetworkKind, Step, negative_pearson, number_in, widths
from .nn.nets import DENSE_WIDTHS, DenseNet

LOSSES = ("mse", "pearson")
# The write-up's widths and batch (SEED-NOTEBOOKS §3.2 B5: 512-256-128-64, batches of 512). The loss is
# −Pearson by default: on planted-signal data (benches/nn_kinds.py) MSE fitted noise (0.17 of the oracle's
# held-out corr against 0.59, means of 3 seeds).
DEFAULTS = {**COMMON_DEFAULTS, "batch_size": 512, "widths": list(DENSE_WIDTHS), "dropout": 0.1, "lr": 1e-3,
            "weight_decay": 0.0, "loss": "pearson"}


def dense_loss(net: DenseNet, batch: Batch, cast: Cast, loss: str, per_era: bool) -> torch.Tensor:
    """The batch's loss (float32, computed outside autocast): MSE, or −Pearson (per era with ``per_era``)."""
    with cast():
        pred = net(batch.x)
    if loss == "mse":
        return nn.functional.mse_loss(pred.float(), batch.y)
    return negative_pearson(pred.float(), batch.y, batch.era if per_era else None)


def dense_step(net: DenseNet, cast: Cast, settings: dict) -> Step:
    """One Adam step on a batch's loss."""
    opt = torch.optim.Adam(net.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])

    def step(batch: Batch) -> None:
        opt.zero_grad(set_to_none=True)
        dense_loss(net, batch, cast, settings["loss"], settings["per_era"]).backward()
        opt.step()

    return step


class DenseKind(NetworkKind):
    """A dense network (the write-up's Keras MLP, in PyTorch)."""

    name = "mlp"
    DEFAULTS = DEFAULTS

    def check_own(self, settings: dict) -> dict:
        if settings["loss"] not in LOSSES:
            raise InputError(f"model kind 'mlp': loss must be one of {', '.join(LOSSES)}, got {settings['loss']!r}")
        if settings["per_era"] and settings["loss"] != "pearson":
            raise InputError("model kind 'mlp': per_era applies to loss 'pearson' (the correlation per era); "
                             "set loss = \"pearson\" or per_era = false")
        return {**settings, "widths": widths(self.name, "widths", settings["widths"]),
                "dropout": number_in(self.name, "dropout", settings["dropout"], 0.0, 1.0),
                "lr": number_in(self.name, "lr", settings["lr"], 0.0, open_low=True),
                "weight_decay": number_in(self.name, "weight_decay", settings["weight_decay"], 0.0)}

    def make_net(self, n_features: int, settings: dict) -> DenseNet:
        return DenseNet(n_features, tuple(settings["widths"]), settings["dropout"])

    def make_step(self, net: DenseNet, cast: Cast, settings: dict) -> Step:
        return dense_step(net, cast, settings)


KIND = DenseKind()
