"""A model directory on disk, checked before LightGBM sees it.

LightGBM trusts a model file: a truncated one makes it read past the text it was given and
abort or crash the whole process (SIGABRT, SIGSEGV), and an unexpected ``model.json`` surfaced
as an internal error later. Here:

- :func:`check_model_meta`: model.json holds the keys and types every reader uses;
- :func:`check_model_text`: a LightGBM model file is complete and well formed: ``tree`` header
  with its required keys, every ``Tree=i`` block where ``tree_sizes`` puts it with the lines
  LightGBM's parser requires (arrays of the right length, numbers, features in range, child
  pointers that only go down the tree), ``end of trees``, ``[key: value]`` parameter lines and
  the ``pandas_categorical`` line the Python package writes last, and as many features as
  model.json lists (by name, or LightGBM's ``Column_i`` for a model trained from a store).

Both raise one-line :class:`~eraflow.engine.errors.InputError`s; this module imports no LightGBM.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ..errors import InputError

HEADER_KEYS = ("version", "num_class", "num_tree_per_iteration", "max_feature_idx", "feature_names",
               "feature_infos", "tree_sizes")
MULTI_EQUALS_KEYS = ("feature_names", "monotone_constraints")  # LightGBM allows '=' inside these values only
FLAG_LINES = ("average_output",)  # header lines without '=' LightGBM writes (average_output: a random forest)
END_OF_TREES = b"end of trees\n"
MAX_TREE_LINES = 22  # LightGBM's tree parser reads at most this many key=value lines
_NUM = rb"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|inf|nan)"  # as LightGBM writes doubles
NUMBERS = re.compile(rb"%s(?: %s)*" % (_NUM, _NUM))
INTEGERS = re.compile(rb"-?\d+(?: -?\d+)*")
# arrays of a tree: one entry per split (num_leaves − 1) or per leaf, with the numbers they hold
SPLIT_ARRAYS = {b"left_child": INTEGERS, b"right_child": INTEGERS, b"split_feature": INTEGERS,
                b"threshold": NUMBERS, b"decision_type": INTEGERS}
OPTIONAL_SPLIT_ARRAYS = {b"split_gain": NUMBERS, b"internal_value": NUMBERS, b"internal_weight": NUMBERS,
                         b"internal_count": INTEGERS}
LEAF_ARRAYS = {b"leaf_weight": NUMBERS, b"leaf_count": INTEGERS}
CATEGORICAL = 1  # decision_type bit of a categorical split
PARAMETER_LINE = re.compile(rb"\[[^\]:\n]+: [^\n]*\]")


def missing_file(file: Path) -> InputError:
    """The one-line error for a model file that is not there."""
    return InputError(f"{file.parent} is incomplete: {file.name} is missing")


def damaged_file(file: Path, reason: str) -> InputError:
    """The one-line error for a damaged model file."""
    return InputError(f"{file} is damaged ({reason}); retrain the model with `eraflow train` or restore the file")


def _header(text: str, file: Path) -> dict[str, str]:
    """``key=value`` lines before the first tree, as LightGBM reads them."""
    header = {}
    for line in text.splitlines():
        if not line:
            continue
        key, sep, value = line.partition("=")
        if line in FLAG_LINES:
            header[line] = ""
            continue
        if not sep or key == "Tree" or ("=" in value and key not in MULTI_EQUALS_KEYS):
            raise damaged_file(file, f"unexpected header line {line[:40]!r}")
        header[key] = value
    missing = [k for k in HEADER_KEYS if k not in header]
    if missing:
        raise damaged_file(file, f"no {', '.join(missing)} in its header")
    return header


def _int_list(value: str, key: str, file: Path) -> list[int]:
    if not re.fullmatch(r"\d+( \d+)*", value):
        raise damaged_file(file, f"{key} is not a list of integers")
    return [int(v) for v in value.split()]


def _tree_fields(block: bytes) -> dict[bytes, bytes] | str:
    """The ``key=value`` lines of one tree block (after ``Tree=i``), or what is wrong with them."""
    if not block.endswith(b"\n\n") or b"\r" in block:
        return "it does not end with a blank line"
    lines = block.split(b"\n")
    n = lines.index(b"")
    if n > MAX_TREE_LINES or any(lines[n:]):
        return "unexpected lines"
    fields = {}
    for line in lines[:n]:
        key, sep, value = line.partition(b"=")
        if not sep:
            return f"a line without '=' ({line[:30]!r})"
        fields[key] = value
    return fields


def _array(fields: dict, key: bytes, pattern: re.Pattern, length: int, required: bool = True) -> list[str] | str:
    """The ``length`` entries of array ``key`` (matching ``pattern``), or what is wrong with them."""
    if key not in fields:
        return f"no {key.decode()}" if required else []
    value = fields[key]
    if not pattern.fullmatch(value) or value.count(b" ") + 1 != length:
        return f"{key.decode()} is not {length} numbers"
    return value.decode().split(" ")


def _children_problem(left: list[str], right: list[str], n_leaves: int) -> str | None:
    """Child pointers must name a later split (LightGBM numbers splits in order) or a leaf ``~k``."""
    for node, children in enumerate(zip(left, right)):
        for c in map(int, children):
            if not (node < c < n_leaves - 1 or -n_leaves <= c <= -1):
                return f"split {node} points to node {c}"
    return None


def _tree_problem(block: bytes, n_features: int) -> str | None:
    """What LightGBM's tree parser or its predictions would trip on in one tree block, or None."""
    fields = _tree_fields(block)
    if isinstance(fields, str):
        return fields
    if not all(re.fullmatch(rb"\d+", fields.get(k, b"")) for k in (b"num_leaves", b"num_cat")):
        return "no num_leaves or num_cat"
    n, n_cat = int(fields[b"num_leaves"]), int(fields[b"num_cat"])
    if n < 1:
        return "no leaves"
    arrays = {b"leaf_value": _array(fields, b"leaf_value", NUMBERS, n)}
    if n > 1:
        arrays.update({k: _array(fields, k, p, n) for k, p in LEAF_ARRAYS.items() if k in fields})
        arrays.update({k: _array(fields, k, p, n - 1) for k, p in SPLIT_ARRAYS.items()})
        arrays.update({k: _array(fields, k, p, n - 1, False) for k, p in OPTIONAL_SPLIT_ARRAYS.items()})
    problem = next((a for a in arrays.values() if isinstance(a, str)), None)
    if problem or n == 1:
        return problem
    if any(not 0 <= int(f) < n_features for f in arrays[b"split_feature"]):
        return "a split on a feature the model does not have"
    categorical = any(int(d) & CATEGORICAL for d in arrays[b"decision_type"])
    if categorical and (n_cat == 0 or b"cat_boundaries" not in fields or b"cat_threshold" not in fields):
        return "a categorical split without its categories"
    return _children_problem(arrays[b"left_child"], arrays[b"right_child"], n)


def _check_trees(data: bytes, start: int, sizes: list[int], n_features: int, file: Path) -> int:
    """Check each ``Tree=i`` block where ``tree_sizes`` puts it; returns where ``end of trees`` starts."""
    offset = start
    for i, size in enumerate(sizes):
        end = offset + size
        head = b"Tree=%d\n" % i
        if not data.startswith(head, offset) or end > len(data):
            raise damaged_file(file, f"tree {i} of {len(sizes)} is missing or cut")
        problem = _tree_problem(data[offset + len(head):end], n_features)
        if problem:
            raise damaged_file(file, f"tree {i}: {problem}")
        offset = end
    if not data.startswith(END_OF_TREES, offset):
        raise damaged_file(file, "the trees end early (no 'end of trees' where tree_sizes says)")
    return offset


def _check_tail(data: bytes, offset: int, file: Path) -> None:
    """After the trees: parameters, then the ``pandas_categorical`` line the Python package writes last."""
    body, _, last = data.rstrip(b"\n").rpartition(b"\n")
    params = body.find(b"\nparameters:\n", offset)
    params_end = body.find(b"\nend of parameters", params)
    if params < 0 or params_end < 0 or not last.startswith(b"pandas_categorical:"):
        raise damaged_file(file, "it ends before its parameters and pandas_categorical line")
    lines = body[params + len(b"\nparameters:\n"):params_end].split(b"\n")
    if not all(PARAMETER_LINE.fullmatch(line) for line in lines if line):
        raise damaged_file(file, "a parameter line is not [name: value]")
    try:
        json.loads(last.partition(b":")[2])
    except ValueError:
        raise damaged_file(file, "its pandas_categorical line is cut") from None


def check_model_text(data: bytes, file: Path, features: list[str]) -> None:
    """InputError unless ``data`` is a complete LightGBM model file for a model of ``features``.

    Example: ``check_model_text(path.read_bytes(), path, meta["features"])`` before
    ``lightgbm.Booster(model_file=path)``.
    """
    if not data.startswith(b"tree\n"):
        raise damaged_file(file, "not a LightGBM model file" if data else "empty file")
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise damaged_file(file, "not a text file") from None
    first_tree = data.find(b"\nTree=0\n")
    if first_tree < 0:
        raise damaged_file(file, "no trees")
    header = _header(data[len(b"tree\n"):first_tree].decode("utf-8"), file)
    try:
        n_features = int(header["max_feature_idx"]) + 1
        per_iteration = int(header["num_tree_per_iteration"])
    except ValueError:
        raise damaged_file(file, "max_feature_idx or num_tree_per_iteration is not an integer") from None
    names = header["feature_names"].split(" ")
    if len(names) != n_features or len(header["feature_infos"].split(" ")) != n_features:
        raise damaged_file(file, f"its header lists {len(names)} feature names for {n_features} features")
    sizes = _int_list(header["tree_sizes"], "tree_sizes", file)
    if per_iteration < 1 or len(sizes) % per_iteration:
        raise damaged_file(file, f"{len(sizes)} trees for {per_iteration} per iteration")
    _check_tail(data, _check_trees(data, first_tree + 1, sizes, n_features, file), file)
    mixed = "the model directory mixes files of different models: retrain it"
    if len(names) != len(features):
        raise InputError(f"{file} was trained on {len(names)} features but model.json lists {len(features)}; {mixed}")
    if names != features and names != [f"Column_{i}" for i in range(len(names))]:
        other = next(f"{a} ≠ {b}" for a, b in zip(names, features) if a != b)
        raise InputError(f"{file} was trained on other features than model.json lists ({other}); {mixed}")


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _meta_problem(meta) -> str | None:
    """What is wrong with a parsed model.json, or None."""
    if not isinstance(meta, dict):
        return "it is not a JSON object"
    for key in ("features", "targets"):
        value = meta.get(key)
        if not _is_str_list(value) or not value:
            return f"{key!r} must be a non-empty list of names"
        if len(set(value)) != len(value):
            return f"{key!r} repeats a name"
    targets = meta["targets"]
    aliases = meta.get("aliases") or {}
    if not isinstance(aliases, dict) or any(not isinstance(a, str) or r not in targets or a in targets
                                            for a, r in aliases.items()):
        return "'aliases' must map other target names to trained targets"
    weights = meta.get("ensemble_weights")
    if weights is not None and (not isinstance(weights, list) or len(weights) != len(targets)
                                or not all(_is_number(w) and w >= 0 for w in weights) or sum(weights) <= 0):
        return f"'ensemble_weights' must be {len(targets)} non-negative numbers, not all zero"
    post = meta.get("postprocess")
    if post is not None:
        if not isinstance(post, dict) or not isinstance(post.get("column"), str):
            return "'postprocess' must be an object with a 'column' name"
        proportion = post.get("proportion")
        if proportion is not None and not (_is_number(proportion) and 0 <= proportion <= 1):
            return "'postprocess' proportion must be a number in [0, 1]"
        if post.get("features") is not None and not _is_str_list(post["features"]):
            return "'postprocess' features must be a list of names"
    return None


def check_model_meta(meta, file: Path) -> dict:
    """``meta`` (parsed model.json) when it has what readers use; a one-line InputError otherwise."""
    problem = _meta_problem(meta)
    if problem:
        raise InputError(f"{file} is malformed: {problem}; retrain the model or restore model.json")
    return meta
