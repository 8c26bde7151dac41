"""A trained network's eval-mode forward pass in NumPy (kinds ``gtruda`` and ``mlp``; no torch).

A network is a list of layer operations applied in order, each a tuple ``(name, *arrays)``:

- ``("conv", w (out, in, k), b (out,), stride)``: Conv1d without padding,
  ``y[o, l] = b[o] + Σ_{c,j} w[o, c, j] · x[c, stride·l + j]``;
- ``("affine", scale (C,), shift (C,))``: BatchNorm with its running statistics,
  ``scale = γ / √(var + eps)``, ``shift = β − mean · scale`` per channel (axis 1);
- ``("linear", w (out, in), b (out,))``: ``x · wᵀ + b``;
- ``("leaky_relu", slope)``, ``("relu",)``, ``("sigmoid",)``. Dropout is the identity in eval mode: no op.

All arithmetic is float32, as torch's, so predictions match it to float32 precision; rows go
through in chunks of :data:`CHUNK_ROWS` to bound memory (Numerai's runtime: 1 CPU, 4 GB).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

MISSING_INPUT = 0.5  # a missing code (NaN) is the middle bucket, code 2 → 2/4, as the linear kinds read it
CHUNK_ROWS = 4096  # rows per forward pass: the first conv's windows of 4096 × 2376 codes take ~100 MB


def inputs_from_codes(x: np.ndarray) -> np.ndarray:
    """Network inputs ``c / 4 ∈ [0, 1]`` (float32, rows × features) of feature codes ``c`` (NaN or < 0 → 0.5)."""
    codes = np.asarray(x, dtype=np.float64)
    return np.where(np.isnan(codes) | (codes < 0), MISSING_INPUT, codes / 4.0).astype(np.float32)


def conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    """Conv1d without padding of ``x`` (rows, in, L) → (rows, out, (L − k) // stride + 1)."""
    windows = sliding_window_view(x, w.shape[2], axis=2)[:, :, ::stride]  # (rows, in, L_out, k)
    return np.tensordot(windows, w, axes=([1, 3], [1, 2])).transpose(0, 2, 1) + b[:, None]


def per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """``v`` (C,) shaped to broadcast over axis 1 of an ``ndim``-dimensional array."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def apply_layer(x: np.ndarray, op: tuple) -> np.ndarray:
    """One layer operation (see the module docstring) on float32 ``x``."""
    name, *args = op
    if name == "conv":
        return conv1d(x, *args)
    if name == "affine":
        scale, shift = args
        return x * per_channel(scale, x.ndim) + per_channel(shift, x.ndim)
    if name == "linear":
        w, b = args
        return x @ w.T + b
    if name == "leaky_relu":
        return np.where(x > 0, x, x * np.float32(args[0]))
    if name == "relu":
        return np.maximum(x, np.float32(0))
    if name == "sigmoid":
        return np.float32(0.5) * (np.float32(1) + np.tanh(np.float32(0.5) * x))  # 1/(1+e^−x) without overflow
    raise ValueError(f"unknown layer operation {name!r}")


def run_layers(x: np.ndarray, ops: list[tuple]) -> np.ndarray:
    """The layer operations ``ops`` applied in order."""
    for op in ops:
        x = apply_layer(x, op)
    return x


class NetPredictor:
    """A network's eval-mode output per row: ``layers(inputs)``, or for GTRUDA (``encoder`` given)
    ``layers([flatten(encoder(inputs)) channel-major, inputs])``; inputs from :func:`inputs_from_codes`.
    """

    def __init__(self, layers: list[tuple], encoder: list[tuple] | None = None):
        self.layers, self.encoder = layers, encoder

    def forward(self, inputs: np.ndarray) -> np.ndarray:
        """The network's output (rows,) for float32 inputs (rows × features)."""
        if self.encoder is not None:
            latent = run_layers(inputs[:, None, :], self.encoder)  # (rows, 64, L5)
            inputs = np.concatenate([latent.reshape(len(latent), -1), inputs], axis=1)
        return run_layers(inputs, self.layers)[:, 0]

    def predict(self, x: np.ndarray, eras: np.ndarray) -> np.ndarray:
        out = np.empty(len(x), dtype=np.float64)
        for start in range(0, len(x), CHUNK_ROWS):
            out[start:start + CHUNK_ROWS] = self.forward(inputs_from_codes(x[start:start + CHUNK_ROWS]))
        return out
