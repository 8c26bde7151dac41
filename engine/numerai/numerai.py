"""Numerai's API through numerapi: credentials, dataset downloads, prediction and model uploads.

Every function takes the API client as a parameter (``numerai_client`` builds the real
``numerapi.NumerAPI``), so tests pass a fake with the same methods. numerapi's own errors
(``ValueError`` from its GraphQL calls, ``requests`` exceptions, the ``KeyError`` it raises after
swallowing an HTTP error) become one-line eraflow errors that never include the secret key.

Downloads resume and land atomically: numerapi writes ``<dest>.temp`` and resumes it with an
HTTP Range request; eraflow points it at ``OUT/.FILE.part``, checks the finished file (every
parquet page decoded, JSON parsed) and renames it to ``OUT/FILE`` after an fsync, so
``OUT/FILE`` is always complete.
``OUT/.eraflow-download.json`` records what each file is (dataset name, round for live files).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import tomllib
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import requests

from ..atomic import atomic_write_json, fsync_path
from ..errors import EraflowError, InputError
from ..lock import exclusive_lock
from ..outputs import is_own_output
from ..signals.submission import submission_frame, validate_signals_submission
from .submission import read_submission, validate_submission

ENV_PUBLIC_ID = "NUMERAI_PUBLIC_ID"
ENV_SECRET_KEY = "NUMERAI_SECRET_KEY"
ENV_CONFIG = "ERAFLOW_NUMERAI_CONFIG"
DEFAULT_CONFIG = "~/.eraflow/numerai.toml"
PRIVATE_MODE_MASK = 0o077  # any group/other permission bit makes a credentials file unsafe

# --files keys → Numerai v5 file names (each is listed as f"{version}/{file}")
DATASET_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.parquet",),
    "validation": ("validation.parquet",),
    "live": ("live.parquet",),
    "features": ("features.json",),
    "meta_model": ("meta_model.parquet",),
    "benchmarks": ("train_benchmark_models.parquet", "validation_benchmark_models.parquet",
                   "live_benchmark_models.parquet"),
}
DEFAULT_KEYS = ("train", "validation", "live", "features", "meta_model")
OPTIONAL_FILES = frozenset({"train_benchmark_models.parquet"})  # fetched only where Numerai lists it
ROUND_DEPENDENT = frozenset({"live.parquet", "live_benchmark_models.parquet"})  # new every round
MANIFEST = ".eraflow-download.json"
NUMERAPI_LOGGER = "numerapi"
VERIFY_COLUMNS = 64  # columns decoded at once when checking a download: bounded memory, few calls


class NumeraiError(EraflowError):
    """Numerai's API or the network failed; the message says during which step."""


class RoundUncheckedError(NumeraiError):
    """Numerai's file list or current round could not be fetched (network or API failure)."""


@contextmanager
def unchecked_round() -> Iterator[None]:
    """Re-raise a NumeraiError inside the block as RoundUncheckedError."""
    try:
        yield
    except RoundUncheckedError:
        raise
    except NumeraiError as exc:
        raise RoundUncheckedError(str(exc)) from None


# ---------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credentials:
    """A Numerai API key pair; ``repr`` shows the start of the public id and never the secret."""

    public_id: str
    secret_key: str
    source: str = "environment"

    def __repr__(self) -> str:
        return f"Credentials(public_id={self.public_id[:4] + '…'!r}, secret_key=***, source={self.source!r})"


def credentials_path(config_path: str | Path | None = None) -> Path:
    """``config_path``, else ``$ERAFLOW_NUMERAI_CONFIG``, else ``~/.eraflow/numerai.toml``."""
    return Path(config_path or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG).expanduser()


def _missing_message(path: Path) -> str:
    return (f"no Numerai credentials: set {ENV_PUBLIC_ID} and {ENV_SECRET_KEY}, or write "
            f"public_id and secret_key to {path} (then `chmod 600 {path}`)")


def _credentials_from_env() -> Credentials | None:
    public_id, secret = (os.environ.get(name, "").strip() for name in (ENV_PUBLIC_ID, ENV_SECRET_KEY))
    if public_id and secret:
        return Credentials(public_id, secret, "environment")
    if public_id or secret:
        unset = ENV_SECRET_KEY if public_id else ENV_PUBLIC_ID
        raise InputError(f"{ENV_PUBLIC_ID if public_id else ENV_SECRET_KEY} is set but {unset} is not; set both")
    return None


def _credentials_from_file(path: Path) -> Credentials:
    mode = path.stat().st_mode
    if mode & PRIVATE_MODE_MASK:
        raise InputError(f"{path} is accessible by other users (mode {mode & 0o777:04o}); "
                         f"run `chmod 600 {path}`")
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path} ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path} is not valid TOML ({exc})") from None
    public_id, secret = (v.strip() if isinstance(v, str) else v for v in (doc.get("public_id"), doc.get("secret_key")))
    if not (isinstance(public_id, str) and public_id and isinstance(secret, str) and secret):
        raise InputError(f"{path} must set public_id and secret_key (strings)")
    return Credentials(public_id, secret, str(path))


def load_credentials(config_path: str | Path | None = None, *, required: bool = True) -> Credentials | None:
    """Numerai API keys from ``NUMERAI_PUBLIC_ID``/``NUMERAI_SECRET_KEY``, else from a TOML file.

    The file (``credentials_path(config_path)``) holds ``public_id = "…"`` and
    ``secret_key = "…"`` and must not be readable or writable by group or others. Surrounding
    whitespace (a pasted trailing newline) is stripped from both keys. With nothing configured:
    InputError naming both variables and the file, or None when not ``required``.
    """
    found = _credentials_from_env()
    if found is not None:
        return found
    path = credentials_path(config_path)
    if path.is_file():
        return _credentials_from_file(path)
    if required:
        raise InputError(_missing_message(path))
    return None


def numerai_client(credentials: Credentials | None, show_progress_bars: bool = False, signals: bool = False):
    """A ``numerapi.NumerAPI`` client, or ``numerapi.SignalsAPI`` when ``signals`` (anonymous when
    ``credentials`` is None); makes no request.

    numerapi's log lines are silenced (they can quote the request header, secret included) and
    the root-logger handler its constructor installs with ``logging.basicConfig`` is removed.
    """
    import numerapi

    keys = (credentials.public_id, credentials.secret_key) if credentials else (None, None)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    silence_numerapi()
    try:
        api = numerapi.SignalsAPI if signals else numerapi.NumerAPI
        return api(public_id=keys[0], secret_key=keys[1], verbosity="warning", show_progress_bars=show_progress_bars)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def silence_numerapi() -> None:
    """Drop numerapi's log records below CRITICAL: eraflow reports API failures itself, without the secret.

    numerapi logs a failed request's exception text, which for a malformed header (a key with a
    trailing newline) quotes ``Authorization: Token PUBLIC$SECRET``.
    """
    logging.getLogger(NUMERAPI_LOGGER).setLevel(logging.CRITICAL)


# ---------------------------------------------------------------- API errors


def _scrub(client, text: str) -> str:
    """The first line of ``text``, shortened, with the client's secret key (if any) masked."""
    line = (text.strip().splitlines() or [""])[0][:200]
    token = getattr(client, "token", None)
    if isinstance(token, tuple) and len(token) == 2 and token[1]:
        line = line.replace(str(token[1]), "***")
    return line


@contextmanager
def api_errors(client, action: str) -> Iterator[None]:
    """Turn numerapi's exceptions inside the block into one-line eraflow errors about ``action``."""
    silence_numerapi()  # a client made outside numerai_client logs too
    try:
        yield
    except EraflowError:
        raise
    except requests.HTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        raise NumeraiError(f"Numerai answered HTTP {status or '?'} while {action}; try again later") from None
    except requests.RequestException as exc:
        raise NumeraiError(f"network error while {action} ({type(exc).__name__}); check the connection "
                           "and run the command again") from None
    except ValueError as exc:  # numerapi.raw_query: the API's error message (bad keys, bad query)
        about_keys = re.search(r"key|auth|session|token|permission", str(exc), re.IGNORECASE)
        hint = "; check your API keys" if about_keys else ""
        raise InputError(f"Numerai refused {action}: {_scrub(client, str(exc)) or 'no reason given'}{hint}") from None
    except (KeyError, TypeError, IndexError):  # numerapi logged an HTTP error and returned {}
        raise NumeraiError(f"no answer from Numerai's API while {action} (network failure or outage); "
                           "try again later") from None


# ---------------------------------------------------------------- downloads


@dataclass(frozen=True)
class Downloaded:
    """One dataset file: Numerai's name (``v5.2/train.parquet``), local path, size, skipped or not."""

    name: str
    path: Path
    bytes: int
    skipped: bool
    round: int | None = None


def _version_key(version: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", version)), version


def listed_versions(listing: Sequence[str]) -> list[str]:
    """Dataset versions (``v5.2``…) in Numerai's file listing, oldest first."""
    return sorted({name.split("/", 1)[0] for name in listing if "/" in name}, key=_version_key)


def check_keys(keys: Sequence[str]) -> None:
    if not keys:
        raise InputError(f"no files asked for; choose from {', '.join(DATASET_FILES)}")
    unknown = [k for k in keys if k not in DATASET_FILES]
    if unknown:
        raise InputError(f"unknown file key(s) {', '.join(map(repr, unknown))}; choose from {', '.join(DATASET_FILES)}")


def wanted_files(listing: Sequence[str], version: str, keys: Sequence[str]) -> list[str]:
    """File names of ``keys`` that Numerai lists for ``version``; InputError for unknowns or absent files."""
    check_keys(keys)
    versions = listed_versions(listing)
    if version not in versions:
        raise InputError(f"unknown dataset version {version!r}; Numerai lists: {', '.join(versions) or 'none'}")
    listed = {name.split("/", 1)[1] for name in listing if name.startswith(version + "/")}
    files: list[str] = []
    for key in keys:
        required = [f for f in DATASET_FILES[key] if f not in OPTIONAL_FILES]
        absent = [f for f in required if f not in listed]
        if absent:
            raise InputError(f"Numerai lists no {', '.join(absent)} for {version} (needed for --files {key})")
        files += [f for f in DATASET_FILES[key] if f in listed and f not in files]
    return files


def read_manifest(out_dir: Path) -> dict:
    """What earlier downloads into ``out_dir`` fetched: ``files`` (done) and ``pending`` (started)."""
    try:
        doc = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        doc = {}
    return {"files": dict(doc.get("files", {})), "pending": dict(doc.get("pending", {}))}


def _save_manifest(out_dir: Path, manifest: dict) -> None:
    atomic_write_json(out_dir / MANIFEST, manifest)


def _identity(dataset: str, file: str, round_num: int | None) -> dict:
    return {"dataset": dataset, "round": round_num if file in ROUND_DEPENDENT else None}


def is_current(out_dir: Path, file: str, identity: dict, record: dict | None) -> bool:
    """Whether ``out_dir/file`` can be kept: present, and (where recorded) the same dataset and round.

    A live file must be recorded with the current round; other files found without a record
    (placed there by hand) count as present.
    """
    if not (out_dir / file).is_file():
        return False
    if file in ROUND_DEPENDENT:
        return (identity["round"] is not None and record is not None
                and (record.get("dataset"), record.get("round")) == (identity["dataset"], identity["round"]))
    return record is None or record.get("dataset") == identity["dataset"]


def part_paths(out_dir: Path, file: str) -> tuple[Path, Path]:
    """The stable partial path given to numerapi, and the ``.temp`` numerapi writes and resumes."""
    part = out_dir / f".{file}.part"
    return part, part.with_name(part.name + ".temp")


def decode_parquet(path: Path, columns_at_once: int = VERIFY_COLUMNS) -> None:
    """Decode every column chunk of every row group of ``path``; raises what pyarrow raises on damage.

    Page checksums are verified where the writer stored them. Columns are decoded
    ``columns_at_once`` per row group at a time, so memory stays at a slice of one row group.
    """
    import pyarrow.parquet as pq

    with pq.ParquetFile(path, page_checksum_verification=True) as parquet:
        names = parquet.schema_arrow.names
        for group in range(parquet.metadata.num_row_groups):
            for start in range(0, len(names), columns_at_once):
                parquet.read_row_group(group, columns=names[start:start + columns_at_once])


def check_download(path: Path, file: str, dataset: str) -> None:
    """InputError unless ``path`` is a parquet file whose every page decodes (``.parquet``) or JSON (``.json``).

    A footer alone is not enough: a file with damaged middle bytes and an intact footer opens,
    then fails (or makes polars panic) when its pages are read.
    """
    import pyarrow as pa

    try:
        if file.endswith(".parquet"):
            decode_parquet(path)
        elif file.endswith(".json"):
            json.loads(path.read_bytes())
    except (pa.ArrowException, OSError, ValueError) as exc:
        kind = "parquet" if file.endswith(".parquet") else "JSON"
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise InputError(f"downloaded {dataset} is not valid {kind} ({reason}); it was deleted, "
                         "run the command again") from None


def _discard(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def fetch_file(client, out_dir: Path, dataset: str, file: str, identity: dict, manifest: dict) -> Downloaded:
    """Download ``dataset`` to ``out_dir/file`` via the stable partial path, check it, rename it in.

    A partial download is resumed only when the manifest says it was started for the same dataset
    and round; otherwise the leftovers are deleted first.
    """
    part, temp = part_paths(out_dir, file)
    resumable = manifest["pending"].get(file) == identity and not (
        file in ROUND_DEPENDENT and identity["round"] is None)
    if not resumable:
        _discard(part, temp)
        manifest["pending"][file] = identity
        _save_manifest(out_dir, manifest)
    with api_errors(client, f"downloading {dataset}"), warnings.catch_warnings():
        # numerapi resumes with verify=False; urllib3 would warn on stderr for every resume
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        client.download_dataset(dataset, dest_path=str(part))
    try:
        check_download(part, file, dataset)
    except InputError:
        _discard(part, temp)
        manifest["pending"].pop(file, None)
        _save_manifest(out_dir, manifest)
        raise
    final = out_dir / file
    fsync_path(part)
    os.replace(part, final)
    fsync_path(out_dir)
    size = final.stat().st_size
    manifest["pending"].pop(file, None)
    manifest["files"][file] = {**identity, "bytes": size}
    _save_manifest(out_dir, manifest)
    return Downloaded(dataset, final, size, skipped=False, round=identity["round"])


def download_datasets(client, out_dir: str | Path, version: str, keys: Sequence[str] = DEFAULT_KEYS,
                      progress: Callable[[str], None] | None = None) -> list[Downloaded]:
    """Fetch the files of ``keys`` (see DATASET_FILES) of dataset ``version`` into ``out_dir``.

    1. ``client.list_datasets()``; unknown version or key → InputError; no answer (network, outage)
       while listing or asking for the round → RoundUncheckedError, before any file is touched.
    2. For each file: keep it when present (live files: only when downloaded in the current
       round, ``client.get_current_round()``); else ``fetch_file`` (resume, check, rename).
    3. ``progress(name)`` is called before each download. One download per directory at a time.

    Example:
        >>> download_datasets(numerai_client(None), "data", "v5.2", ["train", "features"])
    """
    check_keys(keys)
    with unchecked_round(), api_errors(client, "listing Numerai's datasets"):
        listing = list(client.list_datasets())
    files = wanted_files(listing, version, keys)
    round_num = None
    if ROUND_DEPENDENT.intersection(files):
        with unchecked_round(), api_errors(client, "asking for the current round"):
            round_num = client.get_current_round()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{out_dir} is not a directory; give a directory to download into") from None
    results = []
    with exclusive_lock(out_dir / MANIFEST):
        manifest = read_manifest(out_dir)
        for file in files:
            dataset, identity = f"{version}/{file}", _identity(f"{version}/{file}", file, round_num)
            final = out_dir / file
            if is_current(out_dir, file, identity, manifest["files"].get(file)):
                results.append(Downloaded(dataset, final, final.stat().st_size, True, identity["round"]))
                continue
            if progress is not None:
                progress(dataset)
            results.append(fetch_file(client, out_dir, dataset, file, identity, manifest))
    return results


# ---------------------------------------------------------------- submissions


@dataclass(frozen=True)
class SubmitResult:
    """An upload (or dry run): rows sent, non-live rows dropped, model and submission ids."""

    model_name: str
    rows: int
    dropped: int
    dry_run: bool
    model_id: str | None = None
    submission_id: str | None = None


def resolve_model(client, model_name: str) -> str:
    """The id of ``model_name`` among the account's models; InputError listing them when absent."""
    with api_errors(client, "listing your models"):
        models = dict(client.get_models())
    if model_name not in models:
        names = ", ".join(sorted(models)) or "none"
        raise InputError(f"no model named {model_name!r} in this Numerai account (models: {names})")
    return models[model_name]


def _client(client):
    """``client`` itself, or the client made by ``client()`` when given a factory."""
    if client is None:
        raise InputError("uploading needs a Numerai client (credentials); use --dry-run to only validate")
    return client if hasattr(client, "upload_predictions") else client()


def upload_rows(client, kept: pd.DataFrame, path: str | Path, model_id: str, what: str) -> str:
    """``client.upload_predictions`` of ``kept`` written as a CSV named after ``path`` in a temporary folder
    (removed afterwards); the submission id. ``what`` names the upload in an API error."""
    with tempfile.TemporaryDirectory(prefix="eraflow-submit-") as tmp:
        upload = Path(tmp) / f"{Path(path).stem or 'predictions'}.csv"
        kept.to_csv(upload, index=False)
        with api_errors(client, f"uploading {what}"):
            return str(client.upload_predictions(file_path=str(upload), model_id=model_id))


def submit_predictions(client, path: str | Path, model_name: str, live_ids, dry_run: bool = False) -> SubmitResult:
    """Validate the predictions in ``path`` against ``live_ids``, then upload them for ``model_name``.

    1. ``read_submission`` and ``validate_submission``: nothing is sent when the file is invalid.
    2. Unless ``dry_run``: the model id from ``client.get_models()``, then
       ``client.upload_predictions`` of a CSV holding only the validated rows.

    ``client`` is a numerapi client, a zero-argument function making one (called only after
    validation, so a bad file fails before credentials are needed), or None for a dry run.
    """
    frame = read_submission(path)
    kept = validate_submission(frame, pd.Series(live_ids))
    dropped = len(frame) - len(kept)
    if dry_run:
        return SubmitResult(model_name, len(kept), dropped, dry_run=True)
    client = _client(client)
    model_id = resolve_model(client, model_name)
    submission_id = upload_rows(client, kept, path, model_id, f"predictions for {model_name!r}")
    return SubmitResult(model_name, len(kept), dropped, False, model_id, submission_id)


SIGNALS_TOURNAMENT = 11  # numerapi.SignalsAPI.tournament_id (the classic NumerAPI's is 8)


@dataclass(frozen=True)
class SignalsSubmitResult(SubmitResult):
    """A Signals upload (or dry run): rows sent, rows outside the universe dropped, the columns used, and for an
    eraflow predictions file the era and prediction column submitted."""

    ticker_column: str = ""
    signal_column: str = ""
    invalid_tickers: int = 0  # distinct tickers outside the universe
    era: str | None = None
    source_column: str | None = None


def check_signals_client(client) -> None:
    """InputError when ``client`` is a numerapi client of another tournament (a classic ``NumerAPI``)."""
    tournament = getattr(client, "tournament_id", SIGNALS_TOURNAMENT)
    if tournament != SIGNALS_TOURNAMENT:
        raise InputError(f"the Numerai client is for tournament {tournament}, not Signals ({SIGNALS_TOURNAMENT}); "
                         "make it with numerapi.SignalsAPI")


def submit_signals(client, path: str | Path, model_name: str, universe: pd.DataFrame, dry_run: bool = False,
                   column: str | None = None) -> SignalsSubmitResult:
    """Validate the Signals predictions in ``path`` against the live ``universe``, then upload them for ``model_name``.

    1. ``path`` is a submission (ticker column, signal column, optional date) or an eraflow
       predictions file of a keyed store, whose newest era becomes ``[ticker, signal]`` ranked to
       (0, 1) (:func:`~eraflow.engine.signals.submission.submission_frame`; ``column`` picks its
       prediction column);
    2. :func:`~eraflow.engine.signals.submission.validate_signals_submission` (numerai-tools'
       rules): nothing is sent when it fails;
    3. unless ``dry_run``: the Signals model id from ``client.get_models()``, then
       ``client.upload_predictions(file_path=…, model_id=…)`` of a CSV of the validated live rows.

    ``client`` is a ``numerapi.SignalsAPI``, a zero-argument function making one (called only
    after validation), or None for a dry run; ``universe`` holds the live ticker column(s)
    (:func:`~eraflow.engine.signals.submission.read_universe`).
    """
    frame, latest = submission_frame(path, universe, column)
    checked = validate_signals_submission(frame, universe)
    kept = checked.filtered
    found = dict(model_name=model_name, rows=len(kept), dropped=len(frame) - len(kept),
                 ticker_column=checked.ticker_column, signal_column=checked.signal_column,
                 invalid_tickers=len(checked.invalid_tickers), era=latest.era if latest else None,
                 source_column=latest.column if latest else None)
    if dry_run:
        return SignalsSubmitResult(dry_run=True, **found)
    client = _client(client)
    check_signals_client(client)
    model_id = resolve_model(client, model_name)
    submission_id = upload_rows(client, kept, path, model_id, f"Signals predictions for {model_name!r}")
    return SignalsSubmitResult(dry_run=False, model_id=model_id, submission_id=submission_id, **found)


# ---------------------------------------------------------------- model upload


@dataclass(frozen=True)
class ModelUpload:
    """An exported pickle sent to Numerai's model upload: model name and id, upload id, bytes sent."""

    model_name: str
    model_id: str
    upload_id: str
    bytes: int


def check_export_file(path: Path) -> None:
    """InputError unless ``path`` is an ``eraflow export`` pickle named ``*.pkl`` (numerapi requires the suffix)."""
    if not path.is_file():
        raise InputError(f"{path} is not a file; give the pickle written by `eraflow export`")
    if not is_own_output(path, "export"):
        raise InputError(f"{path} is not a pickle written by `eraflow export`; export the model first "
                         "(eraflow export MODEL_DIR -o model.pkl --check)")
    if path.suffix != ".pkl":
        raise InputError(f"{path} must end in .pkl for Numerai's model upload; rename it")


def upload_model(client, path: str | Path, model_name: str, docker_image: str | None = None) -> ModelUpload:
    """Send an exported pickle to Numerai's model upload for ``model_name``.

    1. :func:`check_export_file` (nothing is sent, and no client made, when it fails);
    2. the model id from ``client.get_models()`` (:func:`resolve_model`);
    3. ``client.model_upload(file_path, model_id=…, docker_image=…)``; ``docker_image`` is one of
       Numerai's image names (e.g. "Python 3.11") or None for the account's default.

    ``client`` is a numerapi client or a zero-argument function making one.
    """
    path = Path(path)
    check_export_file(path)
    client = client if hasattr(client, "model_upload") else client()
    model_id = resolve_model(client, model_name)
    with api_errors(client, f"uploading {path.name} for {model_name!r}"):
        upload_id = client.model_upload(file_path=str(path), model_id=model_id, docker_image=docker_image)
    return ModelUpload(model_name, model_id, str(upload_id), path.stat().st_size)
