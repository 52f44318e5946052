#!/usr/bin/env bash
# The GPU check: one command on a fresh CUDA machine (no internet, no pip), from the repository root:
#   bash bench/gpu_check.sh              # on the GPU, at most 8 minutes of wall time
#   bash bench/gpu_check.sh --rehearse   # every stage of this script on a CPU, in at most 3 minutes (CI runs it)
# Needs torch, triton, pytest, pytest-benchmark and click (python or python3); never imports wandb,
# matplotlib, PIL or numpy.
#
# Stages, each with its own time budget (seconds, measured; see docs/performance.md):
#   check   python -m wgan.check: device, versions, kernel parity, fused-vs-eager epoch parity, timings
#   tests   the CUDA parity tests (on a CPU they skip: the rehearsal checks that the ids and paths exist)
#   bench   the benchmarks, one pytest run and one JSON per file, so a file cut off loses only itself
#   ratios  bench/ratios.py over every JSON written: the table is the last lines printed
# Every log and JSON goes into one folder: $GPU_CHECK_OUT, else $OUT, else /tmp/gpu_check. A stage that
# runs out of time is stopped (its log keeps what it printed) and the next stage starts.
# Exit status: 0 when every stage passed, else the first failing stage's status.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

REHEARSE=0
case "${1:-}" in
    --rehearse) REHEARSE=1 ;;
    "") ;;
    *) echo "usage: bash bench/gpu_check.sh [--rehearse]" >&2; exit 2 ;;
esac
PY=$(command -v python || command -v python3) || { echo "gpu_check: neither python nor python3 found" >&2; exit 2; }
OUT_DIR="${GPU_CHECK_OUT:-${OUT:-/tmp/gpu_check}}"
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/bench_*.json "$OUT_DIR"/stages.tsv

KERNEL_TESTS="tests/test_rmsprop.py tests/test_bias_act.py tests/test_wasserstein.py tests/test_fused_critic.py
    tests/test_upsample_conv.py tests/test_bn_act.py tests/test_fused_generator.py
    tests/test_engine.py tests/test_switches.py tests/test_parity.py tests/test_launch_rules.py"
BENCH_FILES="bench/test_bench_rmsprop.py bench/test_bench_critic.py bench/test_bench_generator.py
    bench/test_bench_epoch.py"
if [ "$REHEARSE" -eq 1 ]; then
    unset CUDA_VISIBLE_DEVICES
    export CUDA_VISIBLE_DEVICES=""   # a CPU run even on a GPU machine
    CHECK_ARGS="--device cpu --quick"
    TEST_SELECT="cuda"               # the CUDA-only tests: they skip here, their ids must still exist
    BUDGET_CHECK=75 BUDGET_TESTS=45 BUDGET_BENCH=50 BUDGET_RATIOS=15
else
    unset TRITON_INTERPRET           # real kernels, not the interpreter
    CHECK_ARGS=""
    TEST_SELECT=""
    # the CUDA cases; cold torch.compile jobs only for the fp32 cases (each costs ~30-60 s)
    BENCH_SELECT="(cuda or epoch) and not interpreter and not (compile and (tf32 or 50m))"
    BUDGET_CHECK=90 BUDGET_TESTS=150 BUDGET_BENCH=50 BUDGET_RATIOS=15  # 7.5 min with the start-up
fi

bench_select() {  # the benchmark cases a file runs: on a GPU its CUDA cases, rehearsed the fast CPU ones
    if [ "$REHEARSE" -eq 0 ]; then echo "$BENCH_SELECT"; return; fi
    case "$1" in
        *rmsprop*) echo "cpu and critic and (fused_ref or forloop)" ;;
        *critic*) echo "cpu and (eager or fused_ref)" ;;
        *generator*) echo "cpu and fwd-64 and (eager or fused_ref) and not channels_last" ;;
        *) echo "eager" ;;
    esac
}

status=0
stage() {  # stage NAME BUDGET_SECONDS COMMAND...: run with a time limit, log it, record its time and status
    local name=$1 budget=$2; shift 2
    local start=$SECONDS
    echo "== $name (budget ${budget} s): $*"
    timeout --kill-after=10 "$budget" "$@" > "$OUT_DIR/$name.log" 2>&1
    local rc=$?
    tail -n 30 "$OUT_DIR/$name.log"
    [ "$rc" -eq 124 ] && echo "gpu_check: $name ran out of its ${budget} s budget; its partial log is $OUT_DIR/$name.log"
    printf '%s\t%s\t%s\t%s\n' "$name" "$((SECONDS - start))" "$budget" "$rc" >> "$OUT_DIR/stages.tsv"
    [ "$rc" -ne 0 ] && [ "$status" -eq 0 ] && status=$rc
    return 0
}

if [ "$REHEARSE" -eq 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA device; run with --rehearse on a CPU" >&2
    exit 2
fi
"$PY" -c "import torch, triton; print(f'gpu_check: torch {torch.__version__}, triton {triton.__version__}, ' \
    f'{torch.cuda.get_device_name() if torch.cuda.is_available() else \"cpu\"}')"

# shellcheck disable=SC2086  # word splitting of the option and file lists is intended
stage check "$BUDGET_CHECK" "$PY" -m wgan.check $CHECK_ARGS --json "$OUT_DIR/check.json"
# shellcheck disable=SC2086
stage tests "$BUDGET_TESTS" "$PY" -m pytest -q -p no:cacheprovider $KERNEL_TESTS ${TEST_SELECT:+-k "$TEST_SELECT"}
for file in $BENCH_FILES; do
    base=$(basename "$file" .py)
    stage "$base" "$BUDGET_BENCH" "$PY" -m pytest -q -p no:cacheprovider "$file" -k "$(bench_select "$file")" --benchmark-only \
        --benchmark-json="$OUT_DIR/bench_${base#test_bench_}.json" --benchmark-columns=min,median,rounds
done

# the stacked sweep engine (issue 19): the seed configuration, 8 seeds per recipe in one stack, against
# the same 8 runs one after another (rehearsed: 2 small members); the ratio is in the stage's log
for recipe in wgan book; do
    if [ "$REHEARSE" -eq 1 ]; then stack_args="--members 2 --epochs 1 --batch-size 8"; else stack_args="--members 8 --epochs 5 --batch-size 512"; fi
    # shellcheck disable=SC2086
    stage "stack_$recipe" "$BUDGET_BENCH" env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" bench/stack_throughput.py --device auto --recipe "$recipe" $stack_args
done

echo "== stages (name, seconds, budget, exit status)"
column -t "$OUT_DIR/stages.tsv" 2>/dev/null || cat "$OUT_DIR/stages.tsv"
echo "== ratios"
set -- "$OUT_DIR"/bench_*.json
if [ -s "$1" ]; then
    timeout "$BUDGET_RATIOS" "$PY" bench/ratios.py "$@" || { rc=$?; [ "$status" -eq 0 ] && status=$rc; }
else
    echo "gpu_check: no benchmark JSON was written in $OUT_DIR"
    [ "$status" -eq 0 ] && status=1
fi
exit "$status"
