"""The installed eraflow version, recorded in stores, models and ledgers."""

from importlib.metadata import PackageNotFoundError, version


def eraflow_version() -> str:
    try:
        return version("eraflow")
    except PackageNotFoundError:
        return "unknown"
