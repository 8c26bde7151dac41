#!/usr/bin/env bash
# One command for the day a GPU is lent: on one NVIDIA GPU (sized for an H100/H200 in 8 minutes) make a
# venv that sees the machine's CUDA packages (torch, CuPy), install what eraflow lacks (from carried wheel
# packs, else from PyPI), run every GPU parity test, then the GPU benchmarks, and write everything to
# benches/results/gpu-<device>.txt (<device> from nvidia-smi, e.g. gpu-nvidia-h200.txt).
#
#   bash benches/gpu_check.sh                    # or: make gpu-check
#   bash benches/gpu_check.sh --dry-run          # the plan: steps, commands, tests, results file; runs nothing
#   bash benches/gpu_check.sh --pack .whl        # wheel packs for a GPU machine without PyPI (run where pip works)
#   bash benches/gpu_check.sh --stage DIR        # copy packs to $STAGE (multi-call carrying), then exit
#
# Steps (each under `timeout`, each given what is left of --budget; a step that fails does not stop the next):
#   device        nvidia-smi, commit, CPUs
#   venv          $VENV (python -m venv; sees the packages of the python it is made from, torch and CuPy)
#   install       wheels from --wheels DIRs and $STAGE (*.whl, *.tar.xz packs, *.tar.xz.partNN), else PyPI
#                 (-c constraints.txt; cupy-cuda12x/13x by the driver's CUDA); eraflow itself (pip -e .)
#   env           python benches/gpu_bench.py env: versions, torch/CuPy/CUDA devices, OpenCL devices
#   tests         pytest -k "$GPU_K" on $GPU_TESTS: CuPy backend of every kernel, torch CUDA nets,
#                 LightGBM's OpenCL learner (the NVIDIA OpenCL ICD is registered when the image lacks it)
#   lightgbm-cuda (--lightgbm-cuda) LightGBM built with CUDA (as make lightgbm-cuda; offline from a packed sdist);
#                 it replaces the venv's LightGBM, which then has no OpenCL learner (bench-train: lgbm:gpu unavailable)
#   bench-kernels eraflow bench kernels --backend cupy (CuPy vs numba vs numerai-tools, results checked)
#   bench-train   python benches/gpu_bench.py train: CPU vs GPU training time and prediction parity,
#                 lgbm cpu/gpu(OpenCL)[/cuda], xgb cpu/cuda, mlp cpu/cuda
# Exit status: 0 when every step that ran passed, 1 when one failed or timed out, 2 for bad usage or no GPU.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/benches/gpu_check.sh"
cd "$ROOT" || exit 2

# The GPU tests: every test file with a GPU-only path, and the -k expression that selects those tests
# (tests/test_gpu_check.py checks this list against the skipif markers in tests/).
GPU_TESTS=(tests/test_kernels_backends.py tests/test_kernels_behaviour.py tests/test_kernels_churn.py
           tests/test_kernels_neutral_mmc.py tests/test_kernels_numerai.py tests/test_kernels_portfolio.py
           tests/test_evaluate_ux.py tests/test_kind_nn.py tests/test_kind_xgb.py tests/test_lightgbm_opencl.py)
GPU_K="cupy or cuda or gpu or opencl"
# Modules the checks import; install reports those still missing.
MODULES="numpy pyarrow polars duckdb numba scipy click rich lightgbm sklearn threadpoolctl matplotlib pandas
cloudpickle pytest hypothesis psutil numerai_tools cupy torch xgboost"
# What --pack downloads (versions from constraints.txt): what the 'cuda' image of the lent machines lacks.
PACK_NAMES="lightgbm polars polars-runtime-32 duckdb numerai-tools"

usage() { sed -n '2,25p' "$SELF" | sed 's/^# \{0,1\}//'; }
die() { echo "error: $*" >&2; exit 2; }

ARGS=("$@")  # each step runs as `bash gpu_check.sh ARGS __step NAME`, so it parses the same settings
BUDGET=480 PYTHON_FOR_VENV=${PYTHON:-python3} VENV=${TMPDIR:-/tmp}/eraflow-gpu-venv
WORK=${TMPDIR:-/tmp}/eraflow-gpu-check STAGE=${TMPDIR:-/tmp}/eraflow-gpu-stage
ROWS=150000 FEATURES=2376 TREES=200 EPOCHS=2 LIGHTGBM_CUDA=0 CUDA_ARCH=${CUDA_ARCH:-90}
DRY=0 ALLOW_NO_GPU=0 RESULT="" STEPS="" WHEEL_DIRS=() MODE=check PACK_DIR="" PYVER=3.12 WITH_XGB=0 WITH_SDIST=0
while (($#)); do
  case $1 in
    --dry-run) DRY=1 ;;
    --budget) BUDGET=${2:?}; shift ;;
    --wheels) WHEEL_DIRS+=("${2:?}"); shift ;;
    --venv) VENV=${2:?}; shift ;;
    --python) PYTHON_FOR_VENV=${2:?}; shift ;;
    --out) RESULT=${2:?}; shift ;;
    --steps) STEPS=${2//,/ }; shift ;;
    --rows) ROWS=${2:?}; shift ;;
    --features) FEATURES=${2:?}; shift ;;
    --trees) TREES=${2:?}; shift ;;
    --epochs) EPOCHS=${2:?}; shift ;;
    --lightgbm-cuda) LIGHTGBM_CUDA=1 ;;
    --allow-no-gpu) ALLOW_NO_GPU=1 ;;
    --pack) MODE=pack PACK_DIR=${2:?}; shift ;;
    --python-version) PYVER=${2:?}; shift ;;
    --with-xgboost) WITH_XGB=1 ;;
    --with-lightgbm-sdist) WITH_SDIST=1 ;;
    --stage) MODE=stage PACK_DIR=${2:?}; shift ;;
    __step) MODE=step; STEP_NAME=${2:?}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1'; see bash benches/gpu_check.sh --help" ;;
  esac
  shift
done
[[ $BUDGET =~ ^[0-9]+$ ]] || die "--budget must be whole seconds, not '$BUDGET'"
VPY="$VENV/bin/python"
# A crash in native code prints every Python thread's traceback; output reaches the results file as it comes
# (a step killed by its timeout keeps what it printed).
export PYTHONFAULTHANDLER=1 PYTHONUNBUFFERED=1
((${#WHEEL_DIRS[@]})) || { [[ -d $ROOT/.whl ]] && WHEEL_DIRS=("$ROOT/.whl"); }

# ------------------------------------------------------------------------------------------------ helpers

pin() { grep -i -m1 "^$1==" "$ROOT/constraints.txt" || echo "$1"; }  # name==version from constraints.txt

cuda_major() { nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -1; }

device_slug() {  # "NVIDIA H200" -> nvidia-h200
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr '[:upper:]' '[:lower:]' |
    sed 's/[^a-z0-9]\{1,\}/-/g; s/^-//; s/-$//'
}

unpack_wheels() {  # every wheel of the wheel dirs and $STAGE into $WORK/wheels; prints how many
  local dest="$WORK/wheels" dir f
  rm -rf "$dest"; mkdir -p "$dest"
  for dir in "${WHEEL_DIRS[@]}" "$STAGE"; do
    [[ -d $dir ]] || continue
    for f in "$dir"/*.whl; do [[ -e $f ]] && cp "$f" "$dest/"; done
    for f in "$dir"/*.tar.xz; do [[ -e $f ]] && tar -xJf "$f" -C "$dest"; done
    for f in "$dir"/*.tar.xz.part00; do [[ -e $f ]] && cat "${f%00}"?? | tar -xJf - -C "$dest"; done
  done
  find "$dest" -name '*.whl' | wc -l
}

missing_modules() {  # the MODULES that do not import in $VPY
  "$VPY" - $MODULES <<'EOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
EOF
}

# ------------------------------------------------------------------------------------------------- steps

step_device() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || echo "no nvidia-smi"
  echo "CUDA (driver): $(cuda_major)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
       "with $(git status --short 2>/dev/null | wc -l) changed paths"
  echo "CPUs: $(nproc); $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB memory"}'); $(uname -sm)"
  echo "python for the venv: $(command -v "$PYTHON_FOR_VENV") ($("$PYTHON_FOR_VENV" --version 2>&1))"
}

step_venv() {
  if [[ -x $VPY ]]; then echo "venv $VENV kept ($("$VPY" --version))"; return 0; fi
  "$PYTHON_FOR_VENV" -m venv --without-pip --system-site-packages "$VENV" || return 1
  # A venv made from a venv sees the base python's site-packages, not its parent's (where the image keeps
  # torch and CuPy): add the parent's (and run its .pth files) after the new venv's own.
  local site parents p
  site=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  parents=$("$PYTHON_FOR_VENV" -c 'import site, sys
print(" ".join(site.getsitepackages() if sys.prefix != sys.base_prefix else []))')
  for p in $parents; do echo "import site; site.addsitedir('$p')"; done > "$site/zz_parent_site.pth"
  "$VPY" -m pip --version >/dev/null 2>&1 || "$VPY" -m ensurepip --quiet || return 1
  echo "venv $VENV made from $PYTHON_FOR_VENV; parent site-packages: ${parents:-none}"
}

step_install() {
  local n still major
  n=$(unpack_wheels)
  if ((n > 0)); then
    echo "installing $n carried wheels (offline)"
    "$VPY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir "$WORK"/wheels/*.whl || return 1
  fi
  still=$(missing_modules)
  if [[ -n $still ]] && ((n == 0)); then
    local names=() m
    for m in $still; do
      case $m in
        cupy) major=$(cuda_major); [[ -n $major ]] && names+=("cupy-cuda$(( major >= 13 ? 13 : 12 ))x") ;;
        sklearn) names+=("$(pin scikit-learn)") ;;
        numerai_tools) names+=("$(pin numerai-tools)") ;;
        polars) names+=("$(pin polars)" "$(pin polars-runtime-32)") ;;
        torch) names+=(torch) ;;  # PyPI's Linux torch is a CUDA build (constraints.txt pins the CPU one)
        *) names+=("$(pin "$m")") ;;
      esac
    done
    if ((${#names[@]})); then
      echo "installing from PyPI: ${names[*]}"
      "$VPY" -m pip install -q "${names[@]}" || echo "warning: pip could not install: ${names[*]}"
    fi
  fi
  if ! "$VPY" -c "import eraflow.engine as e, sys; sys.exit(not e.__file__.startswith('$ROOT'))" 2>/dev/null; then
    "$VPY" -m pip install -q --no-deps --no-build-isolation --no-index -e "$ROOT" ||
      "$VPY" -m pip install -q --no-deps -e "$ROOT" || return 1  # a build backend from PyPI
  fi
  if [[ ! -x $VENV/bin/eraflow ]]; then  # eraflow came from the parent's site-packages: its command did not
    printf '#!%s\nfrom eraflow.cli import main\nmain()\n' "$VPY" > "$VENV/bin/eraflow" && chmod +x "$VENV/bin/eraflow"
  fi
  still=$(missing_modules)
  echo "eraflow from $ROOT; missing modules: ${still:-none}"
  "$VPY" -m pip list 2>/dev/null |
    grep -i -E '^(numpy|numba|lightgbm|xgboost|torch|cupy|polars|duckdb|pandas|numerai) ' || true
  # Without these the checks cannot start; xgboost and cupy are reported by the steps that need them.
  for m in numpy polars lightgbm pytest; do [[ " $still " == *" $m "* ]] && return 1; done
  return 0
}

step_env() { "$VPY" benches/gpu_bench.py env; }

# A test file that imports an optional library at the top stops the whole pytest run where it is missing.
declare -A NEEDS=([tests/test_kind_xgb.py]=xgboost [tests/test_kind_nn.py]=torch)

step_tests() {
  local missing files=() f
  missing=" $(missing_modules) "
  for f in "${GPU_TESTS[@]}"; do
    if [[ -n ${NEEDS[$f]:-} && $missing == *" ${NEEDS[$f]} "* ]]; then echo "not run: $f (${NEEDS[$f]} missing)"
    else files+=("$f"); fi
  done
  # Newer libraries on the GPU machine may deprecate what CI's pins do not: warnings there, not failures.
  "$VPY" -m pytest -q -p no:cacheprovider -rs -W default::DeprecationWarning -W default::FutureWarning \
    -k "$GPU_K" "${files[@]}"
}

step_lightgbm_cuda() {
  local sdist nccl from
  sdist=$(find "${WHEEL_DIRS[@]}" "$STAGE" -maxdepth 1 -name 'lightgbm-*.tar.gz' 2>/dev/null | head -1)
  from=("$(pin lightgbm)"); [[ -n $sdist ]] && from=(--no-index "$sdist")  # offline from a packed sdist
  nccl=$("$VPY" -c "import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))" 2>/dev/null) ||
    "$VPY" -m pip install -q nvidia-nccl-cu13 || return 1
  nccl=${nccl:-$("$VPY" -c "import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))")}
  NCCL_ROOT=$nccl "$VPY" -m pip install -q --force-reinstall --no-deps --no-binary lightgbm --no-build-isolation \
    --config-settings=cmake.define.USE_CUDA=ON --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" \
    "${from[@]}" || return 1
  "$VPY" -c "import lightgbm, numpy as np; x = np.random.rand(256, 4); \
lightgbm.train({'device_type': 'cuda', 'verbosity': -1}, lightgbm.Dataset(x, x[:, 0]), 2); print('cuda learner ok')"
}

step_bench_kernels() { "$VENV/bin/eraflow" bench kernels --backend cupy; }

step_bench_train() {
  local budget=$(( ${STEP_TIMEOUT:-300} - 15 )) extra=()
  ((LIGHTGBM_CUDA)) && extra+=(--lightgbm-cuda)
  "$VPY" benches/gpu_bench.py train --work "$WORK/train" --rows "$ROWS" --features "$FEATURES" --trees "$TREES" \
    --epochs "$EPOCHS" --budget "$budget" --json "$WORK/train.json" "${extra[@]}"
}

# The NVIDIA OpenCL ICD: LightGBM's wheel carries the Khronos ICD loader, which finds vendors through
# /etc/OpenCL/vendors/*.icd; a container image often lacks nvidia.icd though the driver ships the library.
register_nvidia_opencl() {
  grep -qsl nvidia /etc/OpenCL/vendors/*.icd && { echo "OpenCL: $(grep -ls nvidia /etc/OpenCL/vendors/*.icd)"; return; }
  local lib
  lib=$( (ldconfig -p 2>/dev/null | awk '/libnvidia-opencl\.so\.1/ {print $NF}';
          find /usr/local/nvidia /usr/lib/x86_64-linux-gnu /usr/lib64 -name 'libnvidia-opencl.so.1' 2>/dev/null) |
        head -1)
  if [[ -z $lib ]]; then
    echo "OpenCL: no libnvidia-opencl.so.1 (LightGBM --device gpu has no NVIDIA device)"; return
  fi
  mkdir -p "$WORK/vendors" && echo "$lib" > "$WORK/vendors/nvidia.icd"
  export OCL_ICD_VENDORS="$WORK/vendors" OCL_ICD_FILENAMES="$lib${OCL_ICD_FILENAMES:+:$OCL_ICD_FILENAMES}"
  echo "OpenCL: registered $lib (OCL_ICD_VENDORS=$WORK/vendors)"
}

# --------------------------------------------------------------------------------------------- pack/stage

pack() {
  command -v xz >/dev/null || die "--pack needs xz"
  local dl="$PACK_DIR/.download" stored="$PACK_DIR/.stored" names=() n
  for n in $PACK_NAMES; do names+=("$(pin "$n")"); done
  rm -rf "$dl" "$stored"; mkdir -p "$dl"
  local plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
              --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
  "$PYTHON_FOR_VENV" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${plat[@]}" -d "$dl" "${names[@]}" || die "pip download failed"
  ((WITH_SDIST)) && { "$PYTHON_FOR_VENV" -m pip download -q --no-deps --no-binary=:all: -d "$PACK_DIR" \
    "$(pin lightgbm)" || die "pip download of the LightGBM sdist failed"; }
  "$PYTHON_FOR_VENV" benches/gpu_bench.py repack "$dl"/*.whl --out "$stored" >/dev/null || die "repack failed"
  tar -cf - -C "$stored" . | xz -9 -T0 > "$PACK_DIR/eraflow-gpu-wheels.tar.xz" || die "xz failed"
  if ((WITH_XGB)); then  # ~240 MB of CUDA code: split in 60 MiB parts, carried over several calls (--stage)
    rm -rf "$dl"/* "$stored"
    "$PYTHON_FOR_VENV" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
      "${plat[@]}" -d "$dl" "$(pin xgboost)" || die "pip download of xgboost failed"
    "$PYTHON_FOR_VENV" benches/gpu_bench.py repack "$dl"/*.whl --out "$stored" >/dev/null || die "repack failed"
    tar -cf - -C "$stored" . | xz -9 -T0 | split -b 60M -d - "$PACK_DIR/eraflow-gpu-xgboost.tar.xz.part"
  fi
  rm -rf "$dl" "$stored"
  ls -l "$PACK_DIR"
  echo "carry $PACK_DIR (64 MiB per call on the lent machines); the check installs from it: --wheels $PACK_DIR"
}

stage() {
  mkdir -p "$STAGE" && cp "$PACK_DIR"/* "$STAGE"/ && ls -l "$STAGE"
}

# ------------------------------------------------------------------------------------------------- driver

case $MODE in
  pack) pack; exit ;;
  stage) stage; exit ;;
  step) "step_${STEP_NAME//-/_}"; exit ;;
esac

ALL_STEPS="device venv install env tests"
((LIGHTGBM_CUDA)) && ALL_STEPS+=" lightgbm-cuda"
ALL_STEPS+=" bench-kernels bench-train"
STEPS=${STEPS:-$ALL_STEPS}
for s in $STEPS; do [[ " $ALL_STEPS lightgbm-cuda " == *" $s "* ]] || die "unknown step '$s'; steps: $ALL_STEPS"; done
declare -A CAP=([device]=20 [venv]=60 [install]=150 [env]=60 [tests]=200 [lightgbm-cuda]=420 [bench-kernels]=150
                [bench-train]=900)
declare -A DESC=([device]="nvidia-smi, commit, CPUs" [venv]="$PYTHON_FOR_VENV -m venv --system-site-packages $VENV"
  [install]="pip install --no-index --no-deps carried wheels (else PyPI, -c constraints.txt); pip install -e ."
  [env]="python benches/gpu_bench.py env" [tests]="python -m pytest -k \"$GPU_K\" ${GPU_TESTS[*]}"
  [lightgbm-cuda]="pip install --no-binary lightgbm (USE_CUDA=ON, CUDA_ARCH=$CUDA_ARCH)"
  [bench-kernels]="eraflow bench kernels --backend cupy"
  [bench-train]="python benches/gpu_bench.py train --rows $ROWS --features $FEATURES --trees $TREES --epochs $EPOCHS")

SLUG=$(device_slug)
if [[ -z $SLUG ]]; then
  if ((DRY)); then SLUG="<device>"
  elif ((ALLOW_NO_GPU)); then SLUG=no-gpu
  else die "no NVIDIA GPU answered (nvidia-smi); without one: --dry-run, or --allow-no-gpu to test the script"
  fi
fi
RESULT=${RESULT:-benches/results/gpu-$SLUG.txt}

if ((DRY)); then
  echo "results: $RESULT"
  echo "venv: $VENV (from $PYTHON_FOR_VENV); work: $WORK; wheels: ${WHEEL_DIRS[*]:-none} $STAGE; budget ${BUDGET} s"
  echo "tests: -k \"$GPU_K\" ${GPU_TESTS[*]}"
  for s in $STEPS; do printf 'step %-14s at most %3d s: %s\n' "$s" "${CAP[$s]}" "${DESC[$s]}"; done
  missing=(); for f in "${GPU_TESTS[@]}"; do [[ -f $f ]] || missing+=("$f"); done
  ((${#missing[@]} == 0)) || die "GPU test files missing: ${missing[*]}"
  exit 0
fi

START=$(date +%s)
mkdir -p "$(dirname "$RESULT")" "$WORK"
{
  echo "# eraflow GPU check: bash benches/gpu_check.sh (benches/gpu_check.sh --help says what each step does)"
  echo "# $(date -u '+%Y-%m-%d %H:%M UTC'); device: $SLUG; budget ${BUDGET} s; steps: $STEPS"
} > "$RESULT"
register_nvidia_opencl > "$WORK/opencl.txt"  # not in a pipe: its exports must reach the steps
tee -a "$RESULT" < "$WORK/opencl.txt"
SUMMARY=()
FAILED=0
for s in $STEPS; do
  left=$(( BUDGET - ($(date +%s) - START) - 5 ))
  t=$(( CAP[$s] < left ? CAP[$s] : left ))
  if ((t < 10)); then SUMMARY+=("$(printf '%-14s %-8s %6s  %s' "$s" SKIP - "budget spent")"); continue; fi
  printf '\n== %s (at most %d s) ==\n' "$s" "$t" | tee -a "$RESULT"
  t0=$(date +%s)
  STEP_TIMEOUT=$t timeout --kill-after=10 "$t" bash "$SELF" "${ARGS[@]}" __step "$s" 2>&1 | tee -a "$RESULT"
  rc=${PIPESTATUS[0]}
  dt=$(( $(date +%s) - t0 ))
  case $rc in
    0) status=ok ;;
    124|137) status=TIMEOUT; FAILED=1 ;;
    *) status="FAIL($rc)"; FAILED=1 ;;
  esac
  SUMMARY+=("$(printf '%-14s %-8s %6s' "$s" "$status" "${dt}s")")
  # Without a venv and eraflow in it, the later steps cannot run.
  if [[ $status != ok && ($s == venv || $s == install) ]]; then SUMMARY+=("(stopped: $s failed)"); break; fi
done
{
  printf '\n== summary (%d s of %d) ==\n' "$(( $(date +%s) - START ))" "$BUDGET"
  printf '%s\n' "${SUMMARY[@]}"
  echo "results: $RESULT"
} | tee -a "$RESULT"
exit "$FAILED"
