"""The networks of the kinds ``gtruda`` and ``mlp`` (torch), their geometry, weights and portable form.

GTRUDA (the seed's "Autoencoder", SEED-NOTEBOOKS §2.2): a row's N inputs in [0, 1] as one channel
of length N; a Conv1d encoder (no padding) shrinks it to a latent of 64 channels × L5 positions, a
ConvTranspose1d decoder (no padding) reconstructs it, and a head ``Linear → ReLU … → 1 → Sigmoid``
reads ``[flatten(latent) channel-major, inputs]`` (64·L5 + N values).

Geometry for any N: a convolution of kernel k, stride s maps length L to ``(L − k) // s + 1``, a
transposed one to ``(L − 1)·s + k``. The encoder needs L5 ≥ 1, i.e. N ≥ :data:`MIN_GTRUDA_FEATURES`
= 149; the decoder's length is ``D = 32·L5 + 150``, equal to N only for N ∈ {182, 214, …, 438}.
Otherwise the reconstruction is fitted to N: **cropped** to its first N positions when D > N,
**padded** with 0.5 at the end when D < N. A padded position adds the constant BCE(0.5, x) = ln 2 to
the reconstruction loss and no gradient, so the loss trains the decoded positions only. D grows as
about 32/36 of N: at N = 2,376 (v5 "all"), L5 = 62 and D = 2,134, so the last 242 features are not
reconstructed (the head still reads every input).

Weights on disk are ``{name: array}`` of ``net.state_dict()`` (:func:`state_arrays`, BatchNorm
running statistics included), checked by :func:`load_state_arrays`.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from ..model_files import damaged_file
from ..portable.nets import NetPredictor

# (in, out, kernel, stride, batch norm, activation) per layer, as the seed's tables (SEED-NOTEBOOKS §2.2)
ENCODER = ((1, 4, 5, 2, False, "leaky"), (4, 8, 5, 2, True, "leaky"), (8, 16, 5, 3, True, "leaky"),
           (16, 32, 5, 3, True, "leaky"), (32, 64, 3, 1, False, "relu"))
DECODER = ((64, 32, 5, 1, False, "leaky"), (32, 16, 5, 4, True, "leaky"), (16, 8, 7, 4, True, "leaky"),
           (8, 1, 10, 2, False, "sigmoid"))
LATENT_CHANNELS = ENCODER[-1][1]
LEAKY_SLOPE = 0.2
MIN_GTRUDA_FEATURES = 149  # the smallest N whose encoder output keeps one position (L5 = 1)
PAD_RECONSTRUCTION = 0.5  # value of reconstruction positions past the decoder's length (constant loss, no gradient)
GTRUDA_HEAD = (256, 64)  # the stable notebook's head; the development notebook's was (32, 8)
DENSE_WIDTHS = (512, 256, 128, 64)  # the write-up's MLP (SEED-NOTEBOOKS §3.2 B5)


def gtruda_lengths(n: int) -> tuple[list[int], int]:
    """The encoder's output lengths [L1..L5] for N = ``n`` inputs, and the decoder's output length D.

    Example: ``gtruda_lengths(310) == ([153, 75, 24, 7, 5], 310)``.
    """
    lengths, length = [], n
    for *_, k, s, _, _ in ENCODER:
        length = (length - k) // s + 1
        lengths.append(length)
    for *_, k, s, _, _ in DECODER:
        length = (length - 1) * s + k
    return lengths, length


def check_gtruda_features(n: int) -> None:
    """InputError unless GTRUDA's encoder can take ``n`` features (n ≥ :data:`MIN_GTRUDA_FEATURES`)."""
    if n < MIN_GTRUDA_FEATURES:
        raise InputError(f"the gtruda model needs at least {MIN_GTRUDA_FEATURES} features, not {n} (its encoder "
                         f"shrinks a row of fewer to nothing); select more features (any N ≥ {MIN_GTRUDA_FEATURES} "
                         "works: the reconstruction is cropped or padded with 0.5 to N)")


def _conv_stack(table: tuple, conv: type[nn.Module]) -> nn.Sequential:
    """Convolutions of ``table`` (no padding), each followed by its BatchNorm and activation."""
    activations = {"leaky": lambda: nn.LeakyReLU(LEAKY_SLOPE), "relu": nn.ReLU, "sigmoid": nn.Sigmoid}
    layers = []
    for c_in, c_out, k, s, batch_norm, activation in table:
        layers.append(conv(c_in, c_out, k, stride=s))
        layers.extend([nn.BatchNorm1d(c_out, eps=1e-5, momentum=0.1)] if batch_norm else [])
        layers.append(activations[activation]())
    return nn.Sequential(*layers)


def _dense_stack(n_in: int, widths: tuple[int, ...], dropout: float = 0.0) -> list[nn.Module]:
    """``Linear → ReLU (→ Dropout)`` per width, then ``Linear → 1``."""
    layers = []
    for width in widths:
        layers += [nn.Linear(n_in, width), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        n_in = width
    return layers + [nn.Linear(n_in, 1)]


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _fit_length(y: torch.Tensor, n: int) -> torch.Tensor:
    """``y`` (b, D) cropped to its first ``n`` positions, or padded at the end with 0.5 to ``n``."""
    if y.shape[1] >= n:
        return y[:, :n]
    return nn.functional.pad(y, (0, n - y.shape[1]), value=PAD_RECONSTRUCTION)


class GtrudaNet(nn.Module):
    """The seed's convolutional autoencoder with its prediction head (see the module docstring)."""

    def __init__(self, n_features: int, head: tuple[int, ...] = GTRUDA_HEAD):
        super().__init__()
        check_gtruda_features(n_features)
        self.n_features = n_features
        self.latent_length = gtruda_lengths(n_features)[0][-1]
        self.encoder = _conv_stack(ENCODER, nn.Conv1d)
        self.decoder = _conv_stack(DECODER, nn.ConvTranspose1d)
        self.head = nn.Sequential(*_dense_stack(LATENT_CHANNELS * self.latent_length + n_features, tuple(head)),
                                  nn.Sigmoid())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent (b, 64, L5) of inputs ``x`` (b, N)."""
        return self.encoder(x.unsqueeze(1))

    def reconstruct(self, latent: torch.Tensor) -> torch.Tensor:
        """Reconstruction (b, N) in (0, 1) of a latent: the decoder's output cropped or padded to N."""
        return _fit_length(self.decoder(latent).squeeze(1), self.n_features)

    def predict_from(self, latent: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The head's output (b,) on ``[flatten(latent) channel-major, x]``."""
        return self.head(torch.cat([latent.flatten(1), x], dim=1)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict_from(self.encode(x), x)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of the encoder, decoder, both (autoencoder) and the head (23,641 / 178,049 at N = 310)."""
        encoder, decoder = _count(self.encoder), _count(self.decoder)
        return {"encoder": encoder, "decoder": decoder, "autoencoder": encoder + decoder, "head": _count(self.head)}


class DenseNet(nn.Module):
    """A dense network: ``Linear → ReLU → Dropout`` per width, ``Linear → 1`` (``→ Sigmoid`` when ``sigmoid``)."""

    def __init__(self, n_features: int, widths: tuple[int, ...] = DENSE_WIDTHS, dropout: float = 0.1,
                 sigmoid: bool = False):
        super().__init__()
        self.n_features = n_features
        self.layers = nn.Sequential(*_dense_stack(n_features, tuple(widths), dropout),
                                    *([nn.Sigmoid()] if sigmoid else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(1)

    def parameter_counts(self) -> dict[str, int]:
        return {"network": _count(self.layers)}


def state_arrays(net: nn.Module) -> dict[str, np.ndarray]:
    """``{name: array}`` of ``net.state_dict()`` on the CPU (BatchNorm running statistics included) for ``np.savez``."""
    return {name: t.detach().cpu().numpy() for name, t in net.state_dict().items()}


def _checked_array(arrays: Mapping, name: str, expected: torch.Tensor, file: Path) -> torch.Tensor:
    """``arrays[name]`` as a tensor when it can be read and has ``expected``'s shape; InputError otherwise."""
    try:
        array = np.asarray(arrays[name])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise damaged_file(file, f"weights {name} cannot be read: {exc}") from None
    if array.shape != tuple(expected.shape) or array.dtype.kind not in "fiu":
        raise damaged_file(file, f"weights {name} are {array.dtype} {array.shape}, "
                                 f"the network needs {tuple(expected.shape)}")
    return torch.from_numpy(array.copy())


def load_state_arrays(net: nn.Module, arrays: Mapping, file: Path) -> None:
    """Load ``arrays`` (e.g. ``np.load(file, allow_pickle=False)``) into ``net``; InputError (damaged ``file``)
    when a name is missing or unexpected, or an array cannot be read or has another shape."""
    expected = net.state_dict()
    missing = [name for name in expected if name not in arrays]
    unexpected = [name for name in arrays.keys() if name not in expected]
    if missing or unexpected:
        what = f"no weights {missing[0]}" if missing else f"unexpected weights {unexpected[0]}"
        raise damaged_file(file, f"{what}; it holds another network")
    net.load_state_dict({name: _checked_array(arrays, name, t, file) for name, t in expected.items()})


def _layer_op(module: nn.Module) -> tuple | None:
    """The portable operation (see :mod:`~eraflow.engine.models.portable.nets`) of one eval-mode layer."""
    def f32(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().to(torch.float32).numpy()

    if isinstance(module, nn.Conv1d):
        return "conv", f32(module.weight), f32(module.bias), module.stride[0]
    if isinstance(module, nn.BatchNorm1d):
        scale = module.weight.double() / torch.sqrt(module.running_var.double() + module.eps)
        return "affine", f32(scale), f32(module.bias.double() - module.running_mean.double() * scale)
    if isinstance(module, nn.Linear):
        return "linear", f32(module.weight), f32(module.bias)
    if isinstance(module, nn.LeakyReLU):
        return "leaky_relu", module.negative_slope
    if isinstance(module, (nn.ReLU, nn.Sigmoid)):
        return (type(module).__name__.lower(),)
    if isinstance(module, nn.Dropout):
        return None  # the identity in eval mode
    raise TypeError(f"no portable form of {type(module).__name__}")


def _ops(sequential: nn.Sequential) -> list[tuple]:
    return [op for op in map(_layer_op, sequential) if op is not None]


def portable_predictor(net: GtrudaNet | DenseNet) -> NetPredictor:
    """The eval-mode forward pass of ``net`` as a NumPy-only :class:`NetPredictor` (weights copied, float32)."""
    if isinstance(net, GtrudaNet):
        return NetPredictor(_ops(net.head), encoder=_ops(net.encoder))
    return NetPredictor(_ops(net.layers))
