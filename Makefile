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

# PoCL, an OpenCL runtime on the CPU (Debian/Ubuntu, as root; .ci/run runs it before `make test`): LightGBM's
# OpenCL learner (--device gpu) runs on it, slowly, so tests/test_lightgbm_opencl.py trains it for real
# (those tests skip where no OpenCL device answers).
.PHONY: pocl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
pocl:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pocl-opencl-icd ocl-icd-libopencl1 clinfo >/dev/null

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

# The day a GPU is lent: one command (benches/gpu_check.sh --help). Makes its own venv that sees the machine's
# torch and CuPy, runs every GPU parity test and the GPU benchmarks within GPU_CHECK_BUDGET seconds and writes
# benches/results/gpu-<device>.txt. GPU_CHECK_ARGS, e.g. "--wheels .whl --lightgbm-cuda" or "--dry-run".
.PHONY: gpu-check
GPU_CHECK_BUDGET ?= 480
gpu-check:
	bash benches/gpu_check.sh --budget $(GPU_CHECK_BUDGET) $(GPU_CHECK_ARGS)
