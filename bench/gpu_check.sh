#!/usr/bin/env bash
# GPU check, one command, from the repository root of a CUDA machine (no internet, no pip):
#   bash bench/gpu_check.sh
# 1. the kernels' parity tests on CUDA (tests run on the GPU when torch sees one);
# 2. the kernels' benchmarks (--benchmark-only), JSON written to $GPU_CHECK_OUT (default: $OUT, else
#    /tmp/gpu_check);
# 3. a short table of ratios (fused vs each baseline, bandwidth vs a device copy) as the last lines.
# Needs torch, triton, pytest, pytest-benchmark and click; never imports wandb or matplotlib.
# Budget: about 8 minutes on an H200 (each stage has its own timeout below).
# Exit status: 0 when every stage passed; otherwise the first failing stage's status (the table is
# still printed when a benchmark JSON exists).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET  # real kernels, not the interpreter

# Kernel test files run for CUDA parity; later kernels add theirs to this list.
KERNEL_TESTS="tests/test_rmsprop.py tests/test_bias_act.py tests/test_wasserstein.py tests/test_fused_critic.py
    tests/test_upsample_conv.py tests/test_bn_act.py tests/test_fused_generator.py
    tests/test_engine.py tests/test_switches.py"
# Benchmark files; later kernels add theirs to this list. Only the cases whose id contains "cuda"
# run here (the CPU cases are for CPU machines), plus bench/test_bench_epoch.py, whose cases all
# run on the GPU when there is one.
BENCH_FILES="bench/test_bench_rmsprop.py bench/test_bench_critic.py bench/test_bench_generator.py
    bench/test_bench_epoch.py"
BENCH_SELECT=${BENCH_SELECT:-cuda or epoch}
TEST_TIMEOUT_S=${TEST_TIMEOUT_S:-150}
BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-300}

OUT_DIR="${GPU_CHECK_OUT:-${OUT:-/tmp/gpu_check}}"
mkdir -p "$OUT_DIR"
JSON="$OUT_DIR/bench_gpu.json"
rm -f "$JSON"

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA device; nothing to check" >&2
    exit 2
fi
python -c "import torch, triton; print(f'gpu_check: torch {torch.__version__}, triton {triton.__version__}, ' \
f'{torch.cuda.get_device_name()}')"

status=0
echo "== parity tests: $KERNEL_TESTS"
# shellcheck disable=SC2086  # word splitting of the file lists is intended
timeout "$TEST_TIMEOUT_S" python -m pytest -q -p no:cacheprovider $KERNEL_TESTS 2>&1 | tail -n 25
rc=${PIPESTATUS[0]}
[ "$rc" -ne 0 ] && [ "$status" -eq 0 ] && status=$rc

echo "== benchmarks: $BENCH_FILES"
# shellcheck disable=SC2086
timeout "$BENCH_TIMEOUT_S" python -m pytest -q -p no:cacheprovider $BENCH_FILES -k "$BENCH_SELECT" --benchmark-only \
    --benchmark-json="$JSON" --benchmark-columns=min,median,rounds 2>&1 | tail -n 40
rc=${PIPESTATUS[0]}
[ "$rc" -ne 0 ] && [ "$status" -eq 0 ] && status=$rc

echo "== ratios"
if [ -s "$JSON" ]; then
    python bench/ratios.py "$JSON" || { rc=$?; [ "$status" -eq 0 ] && status=$rc; }
else
    echo "gpu_check: no benchmark JSON was written ($JSON)"
    [ "$status" -eq 0 ] && status=1
fi
exit "$status"
