"""SPACE.toml parsing and the reproducible draws of a search's trials."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from eraflow.engine.errors import InputError
from eraflow.engine.experiments.space import Choice, Constant, Range, parse_space, read_space

SPACE = {"n_estimators": 200, "num_leaves": [15, 31, 63], "learning_rate": {"low": 0.01, "high": 0.1, "log": True},
         "min_data_in_leaf": {"low": 20, "high": 200}, "boosting": ["gbdt", "dart"],
         "feature_fraction": {"low": 0.1, "high": 0.9}}


def test_each_form_parses_to_its_kind():
    space = parse_space(SPACE)
    assert space.params["n_estimators"] == Constant(200)
    assert space.params["num_leaves"] == Choice((15, 31, 63))
    assert space.params["learning_rate"] == Range(0.01, 0.1, log=True, integer=False)
    assert space.params["min_data_in_leaf"] == Range(20, 200, log=False, integer=True)
    assert space.params["feature_fraction"].integer is False
    assert space.varied() == ["num_leaves", "learning_rate", "min_data_in_leaf", "boosting", "feature_fraction"]


def test_trial_draw_is_a_function_of_seed_and_trial_only():
    """Guards against one shared generator: --trials 20 after --trials 10 must keep the first 10."""
    space = parse_space(SPACE)
    first = [space.draw(5, i) for i in range(10)]
    again = [space.draw(5, i) for i in reversed(range(20))][::-1]
    assert again[:10] == first
    assert first != [space.draw(6, i) for i in range(10)]


def test_draw_uses_the_documented_generator():
    """Trial i draws each parameter from np.random.default_rng([seed, i, crc32(name)]) (the README's promise)."""
    space = parse_space({"a": [1, 2, 3], "b": {"low": 0.0, "high": 1.0}, "c": {"low": 1, "high": 9}})

    def rng(name):
        return np.random.default_rng([3, 7, zlib.crc32(name.encode())])

    expected = {"a": [1, 2, 3][int(rng("a").integers(3))], "b": float(rng("b").uniform(0.0, 1.0)),
                "c": int(rng("c").integers(1, 10))}
    assert space.draw(3, 7) == expected


def test_reordering_or_adding_keys_changes_no_other_draw():
    """Guards against one generator shared in file order: moving a key of SPACE.toml (or adding one) must
    not change the other parameters' draws, or a resumed search would refuse its own trial files."""
    space = parse_space(SPACE)
    reordered = parse_space({**dict(reversed(list(SPACE.items()))), "extra": {"low": 1, "high": 5}})
    for i in range(20):
        drawn, again = space.draw(2, i), reordered.draw(2, i)
        assert {k: again[k] for k in drawn} == drawn


def test_draws_stay_in_range_and_have_the_right_types():
    space = parse_space(SPACE)
    draws = [space.draw(0, i) for i in range(400)]
    lr = np.array([d["learning_rate"] for d in draws])
    leaves = np.array([d["min_data_in_leaf"] for d in draws])
    assert lr.min() >= 0.01 and lr.max() <= 0.1
    assert all(type(d["min_data_in_leaf"]) is int and type(d["learning_rate"]) is float for d in draws)
    assert leaves.min() >= 20 and leaves.max() <= 200
    assert {d["num_leaves"] for d in draws} == {15, 31, 63}
    assert {d["n_estimators"] for d in draws} == {200}


def test_log_range_is_uniform_in_log():
    """Guards against a plain uniform draw for log = true: the median of log-uniform(0.01, 1) is 0.1, not ~0.5."""
    space = parse_space({"lr": {"low": 0.01, "high": 1.0, "log": True}})
    x = np.array([space.draw(1, i)["lr"] for i in range(2000)])
    assert abs(np.median(np.log10(x)) - (-1.0)) < 0.1
    assert abs((x < 0.1).mean() - 0.5) < 0.05


def test_integer_ranges_include_both_ends():
    """Guards against rng.integers' exclusive high end leaking into the space (high never drawn)."""
    plain = parse_space({"k": {"low": 1, "high": 3}})
    logged = parse_space({"k": {"low": 1, "high": 4, "log": True}})
    assert {plain.draw(0, i)["k"] for i in range(200)} == {1, 2, 3}
    counts = np.bincount([logged.draw(0, i)["k"] for i in range(4000)], minlength=5)[1:]
    shares = counts / counts.sum()
    expected = np.array([math.log((k + 1) / k) for k in range(1, 5)]) / math.log(5)  # floor(exp(U[log 1, log 5)))
    np.testing.assert_allclose(shares, expected, atol=0.03)


@pytest.mark.parametrize("doc, message", [
    ({}, "no parameters"),
    ({"a": []}, "non-empty list"),
    ({"a": [1, [2]]}, "non-empty list"),
    ({"a": {"low": 1}}, "must have low and high"),
    ({"a": {"low": 1, "high": 2, "step": 1}}, "must have low and high"),
    ({"a": {"low": 2, "high": 1}}, "not below high"),
    ({"a": {"low": 1.0, "high": 1.0}}, "not below high"),
    ({"a": {"low": 0, "high": 1, "log": True}}, "needs low > 0"),
    ({"a": {"low": "x", "high": 1}}, "finite numbers"),
    ({"a": {"low": 0, "high": 1, "log": "yes"}}, "true or false"),
    ({"a": {"low": 0, "high": float("inf")}}, "finite numbers"),
])
def test_malformed_space_is_one_line_error(doc, message):
    with pytest.raises(InputError, match=message) as info:
        parse_space(doc)
    assert "\n" not in str(info.value)


def test_read_space_reports_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "space.toml"
    bad.write_text("num_leaves = [15, 31\n")
    with pytest.raises(InputError, match="not valid TOML"):
        read_space(bad)
    with pytest.raises(InputError, match="is not a file"):
        read_space(tmp_path / "missing.toml")
    good = tmp_path / "good.toml"
    good.write_text("n_estimators = 50\nnum_leaves = [4, 8]\nlearning_rate = {low = 0.01, high = 0.1, log = true}\n")
    assert list(read_space(good).params) == ["n_estimators", "num_leaves", "learning_rate"]
