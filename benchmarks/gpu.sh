#!/usr/bin/env bash
# GPU checks and benchmarks: the test suite's CUDA cases, then throughput.py and
# graph_construction.py on the GPU, writing their CSV/PNG beside the CPU results.
#
#   benchmarks/gpu.sh              # full run on a machine with a CUDA device
#   benchmarks/gpu.sh --quick      # smoke run: test_devices.py, vig_ti at batch 2 with 2 timed
#                                  # steps, the quick k-NN sweep
#   DEVICE=cpu RESULTS=/tmp/smoke benchmarks/gpu.sh --quick   # the same steps on the CPU, to
#                                                            # check the script without a GPU
#
# Environment:
#   PYTHON      interpreter with a CUDA build of torch (default: .venv/bin/python, else python3);
#               install one with `make test TORCH_SPEC="torch --index-url
#               https://download.pytorch.org/whl/cu126"` (README, Install)
#   DEVICE      cuda (default) or cpu
#   RESULTS     output folder (default: benchmarks/results)
#   MODELS      models for throughput.py (default: vig_ti pvig_ti vig_s pvig_s, the issue's four)
#
# Steps and outputs (with DEVICE=cuda):
#   1. environment: $RESULTS/gpu_env.txt (torch, CUDA, GPU, nvidia-smi)
#   2. pytest -m cuda tests: every test case parametrised over devices (tests/conftest.py's
#      `device` fixture) that runs on CUDA, including the no-host-sync check of the eval forward
#      under torch.cuda.set_sync_debug_mode("error"); log in $RESULTS/gpu_tests.txt
#   3. throughput.py --device cuda: official and ours, fp32 and bf16 autocast, eval (batch 16) and
#      train (batch 8), plus the scatter, dense_ref and compile paths:
#      $RESULTS/throughput_cuda.csv / .png / _targets.csv; then the same at batch 64
#      ($RESULTS/throughput_cuda_b64.*), where a GPU is no longer latency-bound
#   4. graph_construction.py --device cuda: $RESULTS/graph_construction_cuda.csv / .png
# The script runs every step even if an earlier one fails and exits non-zero if any failed.
set -uo pipefail

cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
RESULTS=${RESULTS:-benchmarks/results}
MODELS=${MODELS:-vig_ti pvig_ti vig_s pvig_s}
QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "gpu.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$RESULTS"

# ---------------------------------------------------------------------------------- 1. device
if ! "$PYTHON" - "$DEVICE" > "$RESULTS/gpu_env.txt.tmp" <<'EOF'
import sys

import torch

device = sys.argv[1]
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, python {sys.version.split()[0]}")
if device == "cuda":
    if not torch.cuda.is_available():
        print(f"no CUDA device: torch {torch.__version__} (CUDA build: {torch.version.cuda}) "
              "sees no GPU. Run this on a machine with an NVIDIA GPU and a CUDA build of torch "
              "(README, Install), or DEVICE=cpu for a CPU smoke run.", file=sys.stderr)
        sys.exit(1)
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, "
              f"compute capability {p.major}.{p.minor}")
    print(f"bf16 supported: {torch.cuda.is_bf16_supported()}")
elif device != "cpu":
    sys.exit(f"DEVICE must be cuda or cpu, got {device!r}")
EOF
then
    rm -f "$RESULTS/gpu_env.txt.tmp"
    exit 1
fi
mv "$RESULTS/gpu_env.txt.tmp" "$RESULTS/gpu_env.txt"
if [ "$DEVICE" = cuda ] && command -v nvidia-smi > /dev/null; then
    nvidia-smi >> "$RESULTS/gpu_env.txt" 2>&1 || true
fi
cat "$RESULTS/gpu_env.txt"

failed=()
step() {  # step NAME COMMAND...: run, report, remember a failure, carry on
    local name=$1
    shift
    echo
    echo "== $name: $*"
    if ! "$@"; then
        echo "== $name FAILED"
        failed+=("$name")
    fi
}

# ---------------------------------------------------------------------------------- 2. tests
run_tests() {
    local marker=cuda
    [ "$DEVICE" = cpu ] && marker="not cuda"
    local files=(tests)
    [ "$QUICK" = 1 ] && files=(tests/test_devices.py)
    "$PYTHON" -m pytest -q -m "$marker" "${files[@]}" 2>&1 | tee "$RESULTS/gpu_tests.txt"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" = 5 ]; then
        echo "pytest collected no $DEVICE test cases: the device fixture did not see the device"
    fi
    return "$rc"
}
step tests run_tests

# ---------------------------------------------------------------------------------- 3. throughput
paths=(official official_bf16 default bf16 scatter dense_ref compile)
if [ "$QUICK" = 1 ]; then
    step throughput "$PYTHON" benchmarks/throughput.py --device "$DEVICE" --models vig_ti \
        --paths official official_bf16 default bf16 --batch 2 --steps 2 --warmup 1 \
        --out "$RESULTS/throughput_${DEVICE}_quick"
else
    # shellcheck disable=SC2086  # MODELS is a list of words
    step throughput "$PYTHON" benchmarks/throughput.py --device "$DEVICE" --models $MODELS \
        --paths "${paths[@]}" --steps 20 --warmup 5 --out "$RESULTS/throughput_${DEVICE}"
    # shellcheck disable=SC2086
    step throughput_b64 "$PYTHON" benchmarks/throughput.py --device "$DEVICE" --models $MODELS \
        --paths official official_bf16 default bf16 --batch 64 --steps 10 --warmup 3 \
        --out "$RESULTS/throughput_${DEVICE}_b64"
fi

# ---------------------------------------------------------------------------------- 4. k-NN
quick_flag=()
[ "$QUICK" = 1 ] && quick_flag=(--quick --repeat 2)
step graph_construction "$PYTHON" benchmarks/graph_construction.py --device "$DEVICE" \
    ${quick_flag[@]+"${quick_flag[@]}"} --out "$RESULTS/graph_construction_${DEVICE}.csv"

echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu.sh: failed steps: ${failed[*]} (outputs in $RESULTS)"
    exit 1
fi
echo "gpu.sh: all steps passed; outputs in $RESULTS"
