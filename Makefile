# eraflow — `make demo` and `make test` work on a fresh clone with Python 3.11 and pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := demo

.PHONY: demo test bench install clean lightgbm-cuda

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,xgb,nn,dask]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/eraflow run examples/demo.toml --ledger $(DEMO)/ledger.duckdb

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benches/ingest_memory.py

# LightGBM with the CUDA learner (--device cuda), built from source into .venv. Needs nvcc and an
# NVIDIA driver; CUDA_ARCH 90 is H100/H200. LightGBM 4.7 links NCCL, taken from its wheel.
CUDA_ARCH ?= 90
lightgbm-cuda: $(STAMP)
	$(BIN)/python -m pip install --quiet scikit-build-core cmake ninja nvidia-nccl-cu13
	NCCL_ROOT=$$($(BIN)/python -c "import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))") \
	$(BIN)/python -m pip install --force-reinstall --no-deps --no-binary lightgbm --no-build-isolation \
		--config-settings=cmake.define.USE_CUDA=ON \
		--config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=$(CUDA_ARCH) \
		-c constraints.txt lightgbm
	$(BIN)/python -c "import lightgbm, numpy as np; x = np.random.rand(256, 4); \
		lightgbm.train({'device_type': 'cuda', 'verbosity': -1}, lightgbm.Dataset(x, x[:, 0]), 2); print('cuda learner ok')"

clean:
	rm -rf $(DEMO) .pytest_cache .benchmarks
