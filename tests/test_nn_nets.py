"""GTRUDA and dense networks: the seed's geometry and parameter counts, weights on disk, and the
NumPy-only predictor that exports carry (checked against torch's eval forward)."""

from __future__ import annotations

import subprocess
import sys

import cloudpickle
import numpy as np
import pytest
import torch

from eraflow.engine.errors import InputError
from eraflow.engine.models import portable
from eraflow.engine.models.nn.nets import (
    MIN_GTRUDA_FEATURES,
    DenseNet,
    GtrudaNet,
    check_gtruda_features,
    gtruda_lengths,
    load_state_arrays,
    portable_predictor,
    state_arrays,
)
from eraflow.engine.models.portable import nets as portable_nets


def _codes(n_rows: int, n_features: int, seed: int = 0, missing: float = 0.1) -> np.ndarray:
    """Float feature codes 0..4 with a share ``missing`` of NaN, as the exported predictor gets them."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, (n_rows, n_features)).astype(np.float64)
    x[rng.random(x.shape) < missing] = np.nan
    return x


def _torch_inputs(codes: np.ndarray) -> torch.Tensor:
    """The oracle's inputs: code / 4, a missing code as the middle bucket 2 / 4."""
    return torch.tensor(np.nan_to_num(codes, nan=2.0) / 4.0, dtype=torch.float32)


def _eval_forward(net: torch.nn.Module, codes: np.ndarray) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        return net(_torch_inputs(codes)).double().numpy()


def _trained(net: torch.nn.Module, n_features: int, steps: int = 3) -> torch.nn.Module:
    """``net`` after a few Adam steps in train mode, so BatchNorm's running statistics and the weights moved."""
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for step in range(steps):
        x = _torch_inputs(_codes(16, n_features, seed=100 + step))
        loss = (net(x) - x.mean(1)).square().sum()
        if isinstance(net, GtrudaNet):
            loss = loss + torch.nn.functional.binary_cross_entropy(net.reconstruct(net.encode(x)), x, reduction="sum")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return net


# --- geometry and parameter counts (the seed's numbers, SEED-NOTEBOOKS §2.2) ---

def test_parameter_counts_at_310_are_the_seeds():
    torch.manual_seed(0)
    assert GtrudaNet(310).parameter_counts() == {"encoder": 9760, "decoder": 13881, "autoencoder": 23641,
                                                 "head": 178049}
    assert GtrudaNet(310, head=(32, 8)).parameter_counts()["head"] == 20465  # the development notebook's head


def test_latent_and_encoder_lengths_at_310():
    torch.manual_seed(0)
    net = GtrudaNet(310)
    assert gtruda_lengths(310) == ([153, 75, 24, 7, 5], 310)
    x = torch.rand(3, 310)
    assert net.encode(x).shape == (3, 64, 5)
    assert net.reconstruct(net.encode(x)).shape == (3, 310)
    assert net(x).shape == (3,)


@pytest.mark.parametrize("n", [149, 200, 311, 2376])
def test_lengths_match_the_layers_for_any_n(n):
    """gtruda_lengths is computed from the layer table; the real layers must give the same lengths."""
    torch.manual_seed(0)
    net = GtrudaNet(n, head=(4,))
    lengths, decoded = gtruda_lengths(n)
    h = torch.rand(2, 1, n)
    seen = []
    for layer in net.encoder:
        h = layer(h)
        if isinstance(layer, torch.nn.Conv1d):
            seen.append(h.shape[2])
    assert seen == lengths
    assert net.decoder(h).shape == (2, 1, decoded)


def test_reconstruction_equals_n_only_for_182_to_438_step_32():
    aligned = [n for n in range(MIN_GTRUDA_FEATURES, 6000) if gtruda_lengths(n)[1] == n]
    assert aligned == list(range(182, 439, 32))


@pytest.mark.parametrize("n", list(range(182, 439, 32)) + [149, 200, 311, 2376])
def test_reconstruction_is_cropped_or_padded_to_n(n):
    torch.manual_seed(0)
    net = GtrudaNet(n, head=(4,)).eval()
    latent = net.encode(torch.rand(2, n))
    decoded = net.decoder(latent).squeeze(1)
    rebuilt = net.reconstruct(latent)
    assert rebuilt.shape == (2, n)
    d = decoded.shape[1]
    torch.testing.assert_close(rebuilt[:, :min(d, n)], decoded[:, :n], rtol=0, atol=0)
    assert (rebuilt[:, d:] == 0.5).all()  # padded tail (none when d ≥ n)


def test_reconstruction_loss_has_no_gradient_from_padding():
    """A padded position must not pull the decoder: the BCE gradient only comes from decoded positions."""
    torch.manual_seed(0)
    n = 311  # D = 310: one padded position
    net = GtrudaNet(n, head=(4,))
    x = torch.rand(4, n)
    grads = []
    for target_tail in (0.0, 1.0):
        x[:, -1] = target_tail
        net.zero_grad()
        torch.nn.functional.binary_cross_entropy(net.reconstruct(net.encode(x)), x, reduction="sum").backward()
        grads.append(net.decoder[0].weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_too_few_features_are_refused_in_one_line():
    with pytest.raises(InputError) as err:
        GtrudaNet(148)
    message = str(err.value)
    assert "\n" not in message and "148" in message and "149" in message and "cropped or padded" in message
    check_gtruda_features(149)  # the minimum is accepted
    assert gtruda_lengths(149)[0][-1] == 1


# --- the portable predictor against torch's eval forward ---

@pytest.mark.parametrize("n", [310, 200])
def test_portable_gtruda_matches_torch_after_training(n):
    """Guards against BatchNorm read with batch statistics or a wrong flatten order in the exported predictor."""
    torch.manual_seed(1)
    net = _trained(GtrudaNet(n, head=(16, 8)), n)
    assert not torch.allclose(net.encoder[3].running_mean, torch.zeros(8))  # running stats moved
    codes = _codes(37, n, seed=5)
    np.testing.assert_allclose(portable_predictor(net).predict(codes, np.zeros(37)), _eval_forward(net, codes),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("sigmoid", [False, True])
def test_portable_dense_matches_torch_with_dropout_off(sigmoid):
    """Dropout is the identity in eval mode; NaN codes become 0.5."""
    torch.manual_seed(2)
    net = _trained(DenseNet(30, widths=(16, 8), dropout=0.3, sigmoid=sigmoid), 30)
    codes = _codes(25, 30, seed=6, missing=0.3)
    expected = _eval_forward(net, codes)
    np.testing.assert_allclose(portable_predictor(net).predict(codes, np.zeros(25)), expected, rtol=0, atol=1e-5)
    filled = np.nan_to_num(codes, nan=2.0)  # a NaN code must read exactly as the middle code
    np.testing.assert_array_equal(portable_predictor(net).predict(filled, np.zeros(25)),
                                  portable_predictor(net).predict(codes, np.zeros(25)))


def test_portable_chunks_give_the_same_predictions(monkeypatch):
    """Guards against rows lost or misplaced at chunk edges."""
    torch.manual_seed(3)
    predictor = portable_predictor(GtrudaNet(149, head=(8,)).eval())
    codes = _codes(23, 149, seed=7)
    whole = predictor.predict(codes, np.zeros(23))
    monkeypatch.setattr(portable_nets, "CHUNK_ROWS", 5)
    np.testing.assert_array_equal(predictor.predict(codes, np.zeros(23)), whole)
    assert whole.dtype == np.float64 and whole.shape == (23,)


def test_inputs_from_codes_are_codes_over_four_with_missing_at_half():
    x = np.array([[0, 1, 2, 3, 4, np.nan]])
    inputs = portable_nets.inputs_from_codes(x)
    assert inputs.dtype == np.float32
    np.testing.assert_array_equal(inputs, np.float32([[0, 0.25, 0.5, 0.75, 1, portable_nets.MISSING_INPUT]]))


# --- weights on disk ---

@pytest.mark.parametrize("make", [lambda: GtrudaNet(200, head=(8, 4)), lambda: DenseNet(20, widths=(8,))],
                         ids=["gtruda", "dense"])
def test_state_arrays_round_trip_through_npz(tmp_path, make):
    torch.manual_seed(4)
    net = make()
    _trained(net, net.n_features)
    file = tmp_path / "model_target.npz"
    np.savez(file, **state_arrays(net))
    torch.manual_seed(5)
    other = make()
    with np.load(file, allow_pickle=False) as arrays:
        load_state_arrays(other, arrays, file)
    codes = _codes(9, net.n_features, seed=8)
    np.testing.assert_array_equal(_eval_forward(other, codes), _eval_forward(net, codes))
    if isinstance(net, GtrudaNet):
        torch.testing.assert_close(other.encoder[3].running_var, net.encoder[3].running_var, rtol=0, atol=0)


def _load_error(arrays: dict, net: torch.nn.Module, file) -> str:
    with pytest.raises(InputError) as err:
        load_state_arrays(net, arrays, file)
    message = str(err.value)
    assert "\n" not in message and str(file) in message and "damaged" in message
    return message


def test_wrong_weights_are_refused_in_one_line(tmp_path):
    torch.manual_seed(6)
    net = GtrudaNet(200, head=(8,))
    file = tmp_path / "model_t.npz"
    good = state_arrays(net)
    missing = {k: v for k, v in good.items() if k != "head.0.weight"}
    assert "no weights head.0.weight" in _load_error(missing, net, file)
    assert "unexpected weights extra" in _load_error({**good, "extra": np.zeros(1)}, net, file)
    wide = {**good, "head.0.weight": np.zeros((9, 64 * 2 + 200), np.float32)}  # a head of another width
    assert "head.0.weight" in _load_error(wide, net, file)
    text = {**good, "encoder.0.bias": np.array(["a", "b", "c", "d"])}
    assert "encoder.0.bias" in _load_error(text, net, file)
    assert "head.0.weight" in _load_error(state_arrays(GtrudaNet(310, head=(8,))), net, file)  # other N


def test_corrupt_weights_in_the_file_are_refused(tmp_path):
    torch.manual_seed(7)
    net = DenseNet(20, widths=(8,))
    file = tmp_path / "model_t.npz"
    np.savez(file, **state_arrays(net))
    data = bytearray(file.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside a member's data: the zip directory is intact, the CRC is not
    file.write_bytes(bytes(data))
    with np.load(file, allow_pickle=False) as arrays, pytest.raises(InputError) as err:
        load_state_arrays(net, arrays, file)
    assert "cannot be read" in str(err.value) and "\n" not in str(err.value)


# --- what exports carry ---

def test_portable_module_imports_no_torch():
    code = ("import sys\nsys.modules['torch'] = None\n"  # importing torch would now fail
            "import eraflow.engine.models.portable.nets\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'scipy', 'sklearn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "['torch']"  # only the guard itself


def test_portable_predictor_pickles_by_value_and_predicts_without_eraflow_or_torch(tmp_path):
    """Numerai's runtime has neither eraflow nor (necessarily) torch: the pickle must carry the code."""
    torch.manual_seed(8)
    predictor = portable_predictor(_trained(GtrudaNet(149, head=(8,)), 149))
    codes = _codes(11, 149, seed=9)
    cloudpickle.register_pickle_by_value(portable)
    try:
        data = cloudpickle.dumps(predictor)
    finally:
        cloudpickle.unregister_pickle_by_value(portable)
    (tmp_path / "p.pkl").write_bytes(data)
    np.save(tmp_path / "codes.npy", codes)
    code = ("import sys, pickle, numpy as np\nsys.modules['torch'] = None\nsys.modules['eraflow'] = None\n"
            "p = pickle.loads(open('p.pkl', 'rb').read())\n"
            "np.save('out.npy', p.predict(np.load('codes.npy'), np.zeros(11)))")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), predictor.predict(codes, np.zeros(11)))
