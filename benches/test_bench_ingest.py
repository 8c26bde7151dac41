"""pytest-benchmark: ingest against pyarrow decoding the same columns (run: pytest benches/)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from eraflow.engine import IngestOptions, SynthSpec, ingest_files, write_synthetic


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    write_synthetic(out, SynthSpec(eras=41, rows_per_era=1000, features=1000, validation_eras=1, seed=2))
    return out / "train.parquet"


def test_pyarrow_iter_batches(benchmark, source):
    def decode():
        pf = pq.ParquetFile(source)
        cols = [c for c in pf.schema_arrow.names if c.startswith(("feature", "target")) or c in ("id", "era")]
        return sum(b.num_rows for b in pf.iter_batches(columns=cols))

    assert benchmark(decode) == pq.ParquetFile(source).metadata.num_rows


@pytest.mark.parametrize("engine", ["polars", "duckdb"])
def test_ingest(benchmark, source, tmp_path, engine):
    options = IngestOptions(engine=engine)
    result = benchmark(lambda: ingest_files([source], tmp_path / "s", options, force=True))
    assert result.n_rows == pq.ParquetFile(source).metadata.num_rows
