#!/usr/bin/env bash
# The GPU check: one command on a fresh CUDA machine (no internet, no pip), from the repository root:
#   bash bench/gpu_check.sh              # on the GPU: the headline numbers within 4 minutes, all in about 9
#   bash bench/gpu_check.sh --rehearse   # the same stage list on a CPU, in about 2 minutes (CI runs it)
# Needs torch, triton, pytest, pytest-benchmark and click (python or python3). The seed-run stage also
# needs what training needs (numpy, Pillow for an image folder); without them it is skipped, saying why.
#
# Stages, in order of value, each with its own time budget (seconds; see docs/performance.md):
#   check      python -m wgan.check: environment; kernel parity fp32 and bf16; one captured float64
#              same-state epoch parity; epoch times of eager, fused and fused + CUDA graph at fp32,
#              TF32 and bf16 (cudnn.benchmark on, as training sets it)            -- the first 4 minutes
#   seed_run   python -m wgan.train, the seed configuration (--fused), 12000 epochs at the default
#              precision, stopped with SIGTERM at its budget (it checkpoints); its run folder is kept
#              in $OUT_DIR/seed_run for the report and FID/KID elsewhere. Data: $GPU_CHECK_DATA, else
#              ./horses/ (git-ignored), else the stage is skipped, saying why
#   bench_*    the benchmark files without their torch.compile cases, one pytest run per file
#   tests      the CUDA parity tests (on a CPU they skip: the rehearsal checks that the ids exist)
#   compile    torch.compile, last: wgan.check's compile section and the benchmarks' compile cases
# Every result is appended, the moment it exists, as one JSON line to $OUT_DIR/results.jsonl (check
# lines, one per benchmark case, the seed run's summary, one per stage), so a stage stopped at its
# budget loses nothing it had measured. Logs, benchmark JSON and stages.tsv go to $OUT_DIR too:
# $GPU_CHECK_OUT, else $OUT, else /tmp/gpu_check. GPU_CHECK_STAGES (names, space-separated) runs some
# stages only; GPU_CHECK_BUDGET_<STAGE> (e.g. GPU_CHECK_BUDGET_CHECK=60) overrides a budget.
# Exit status: 0 when every stage passed (the seed run counts as passed when stopped at its budget
# with a checkpoint), else the first failing stage's status.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1   # a stage's log keeps what it printed up to a stop

REHEARSE=0
case "${1:-}" in
    --rehearse) REHEARSE=1 ;;
    "") ;;
    *) echo "usage: bash bench/gpu_check.sh [--rehearse]" >&2; exit 2 ;;
esac
PY=$(command -v python || command -v python3) || { echo "gpu_check: neither python nor python3 found" >&2; exit 2; }
OUT_DIR="${GPU_CHECK_OUT:-${OUT:-/tmp/gpu_check}}"
mkdir -p "$OUT_DIR"
rm -rf "$OUT_DIR"/bench_*.json "$OUT_DIR"/stages.tsv "$OUT_DIR"/results.jsonl "$OUT_DIR"/check.json "$OUT_DIR"/seed_run
RESULTS="$OUT_DIR/results.jsonl"
export GPU_CHECK_RESULTS="$RESULTS"   # bench/conftest.py appends one line per benchmark case here

KERNEL_TESTS="tests/test_rmsprop.py tests/test_bias_act.py tests/test_wasserstein.py tests/test_fused_critic.py
    tests/test_upsample_conv.py tests/test_bn_act.py tests/test_fused_generator.py
    tests/test_engine.py tests/test_switches.py tests/test_parity.py tests/test_launch_rules.py"
BENCH_FILES="bench/test_bench_epoch.py bench/test_bench_rmsprop.py bench/test_bench_critic.py bench/test_bench_generator.py"
if [ "$REHEARSE" -eq 1 ]; then
    unset CUDA_VISIBLE_DEVICES
    export CUDA_VISIBLE_DEVICES=""   # a CPU run even on a GPU machine
    CHECK_ARGS="--device cpu --quick"
    SEED_ARGS="--batch-size 16 --device cpu"   # the seed model, small batches: a few epochs in the budget
    TEST_SELECT="cuda"               # the CUDA-only tests: they skip here, their ids must still exist
    BUDGET_CHECK=75 BUDGET_SEED_RUN=20 BUDGET_BENCH=60 BUDGET_TESTS=40 BUDGET_STACK=60 BUDGET_COMPILE=20 BUDGET_RATIOS=15
else
    unset TRITON_INTERPRET           # real kernels, not the interpreter
    CHECK_ARGS=""
    SEED_ARGS=""
    TEST_SELECT=""
    BUDGET_CHECK=180 BUDGET_SEED_RUN=140 BUDGET_BENCH=20 BUDGET_TESTS=50 BUDGET_STACK=25 BUDGET_COMPILE=40 BUDGET_RATIOS=15
fi
CHECK_ARGS="${GPU_CHECK_CHECK_ARGS:-$CHECK_ARGS}"   # e.g. the full check in a rehearsal (its test stops it)
for name in CHECK SEED_RUN BENCH TESTS STACK COMPILE; do   # GPU_CHECK_BUDGET_<STAGE> overrides
    override="GPU_CHECK_BUDGET_$name"
    [ -n "${!override:-}" ] && eval "BUDGET_$name=${!override}"
done

bench_select() {  # the cases a file runs: on a GPU its CUDA cases, rehearsed the fast CPU ones; never compile
    if [ "$REHEARSE" -eq 0 ]; then echo "(cuda or epoch) and not interpreter and not compile"; return; fi
    case "$1" in
        *rmsprop*) echo "cpu and critic and (fused_ref or forloop)" ;;
        *critic*) echo "cpu and (eager or fused_ref)" ;;
        *generator*) echo "cpu and fwd-64 and (eager or fused_ref) and not channels_last" ;;
        *) echo "eager and fp32" ;;
    esac
}

wanted() {  # wanted STAGE: is it among GPU_CHECK_STAGES (all when unset)?
    [ -z "${GPU_CHECK_STAGES:-}" ] && return 0
    case " $GPU_CHECK_STAGES " in *" $1 "*) return 0 ;; esac
    return 1
}

json_line() {  # json_line KEY VALUE ...: one JSON line into results.jsonl, values as strings or numbers
    "$PY" - "$RESULTS" "$@" <<'EOF'
import json, os, sys, time
path, pairs = sys.argv[1], sys.argv[2:]
record = {"time": round(time.time(), 3)}
for key, value in zip(pairs[::2], pairs[1::2]):
    try:
        record[key] = json.loads(value)
    except ValueError:
        record[key] = value
with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")
    f.flush()
    os.fsync(f.fileno())
EOF
}

status=0
stage() {  # stage NAME BUDGET_SECONDS COMMAND...: run with a time limit, log it, record its time and status
    local name=$1 budget=$2; shift 2
    local start=$SECONDS
    echo "== $name (budget ${budget} s): $*"
    timeout --kill-after="${KILL_AFTER:-10}" "$budget" "$@" > "$OUT_DIR/$name.log" 2>&1
    local rc=$?
    tail -n 20 "$OUT_DIR/$name.log"
    [ "$rc" -eq 124 ] && echo "gpu_check: $name ran out of its ${budget} s budget; its partial log is $OUT_DIR/$name.log"
    printf '%s\t%s\t%s\t%s\n' "$name" "$((SECONDS - start))" "$budget" "$rc" >> "$OUT_DIR/stages.tsv"
    json_line section '"stage"' name "\"$name\"" seconds "$((SECONDS - start))" budget "$budget" exit_status "$rc"
    LAST_RC=$rc
    return 0
}
failed() {  # failed RC: remember the first failing status
    [ "$1" -ne 0 ] && [ "$status" -eq 0 ] && status=$1
    return 0
}

if [ "$REHEARSE" -eq 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA device; run with --rehearse on a CPU" >&2
    exit 2
fi
"$PY" -c "import torch, triton; print(f'gpu_check: torch {torch.__version__}, triton {triton.__version__}, ' \
    f'{torch.cuda.get_device_name() if torch.cuda.is_available() else \"cpu\"}')"

if wanted check; then
    # shellcheck disable=SC2086  # word splitting of the option lists is intended
    stage check "$BUDGET_CHECK" "$PY" -m wgan.check $CHECK_ARGS --jsonl "$RESULTS" --json "$OUT_DIR/check.json"
    failed "$LAST_RC"
fi

seed_data() {  # the seed run's data, or nothing (and why, on stderr)
    if [ -n "${GPU_CHECK_DATA:-}" ]; then echo "$GPU_CHECK_DATA"; return; fi
    if [ -d horses ]; then echo "$PWD/horses"; return; fi
    echo "no data: set GPU_CHECK_DATA or put the horses in ./horses/" >&2
}
if wanted seed_run; then
    DATA=$(seed_data 2>"$OUT_DIR/seed_run.why")
    if [ -z "$DATA" ]; then
        why=$(cat "$OUT_DIR/seed_run.why")
    elif ! "$PY" -c "import wgan.train" 2>"$OUT_DIR/seed_run.why"; then
        why="wgan.train cannot start here: $(tail -n 1 "$OUT_DIR/seed_run.why")"
    else
        why=""
    fi
    if [ -n "$why" ]; then
        echo "== seed_run skipped: $why"
        json_line section '"seed_run"' skipped true why "$(printf '%s' "$why" | "$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read()))')"
    else
        # SIGTERM at the budget: the trainer finishes its epoch, checkpoints and stops (timeout's status 124
        # is the expected end); up to 60 s of grace for that before SIGKILL, which would lose the checkpoint
        # shellcheck disable=SC2086
        KILL_AFTER=60 stage seed_run "$BUDGET_SEED_RUN" "$PY" -m wgan.train --fused --epochs 12000 --data "$DATA" \
            --out "$OUT_DIR/seed_run" --wandb disabled --no-report --log-every 100 $SEED_ARGS
        "$PY" bench/seed_run_summary.py "$OUT_DIR/seed_run" "$LAST_RC" >> "$RESULTS" || LAST_RC=1
        if [ "$LAST_RC" -eq 124 ] && [ -f "$OUT_DIR/seed_run/checkpoints/last.pt" ]; then LAST_RC=0; fi
        failed "$LAST_RC"
    fi
fi

for file in $BENCH_FILES; do
    base=$(basename "$file" .py)
    name="bench_${base#test_bench_}"
    wanted "$name" || continue
    stage "$name" "$BUDGET_BENCH" "$PY" -m pytest -q -p no:cacheprovider "$file" -k "$(bench_select "$file")" \
        --benchmark-only --benchmark-json="$OUT_DIR/$name.json" --benchmark-columns=min,median,rounds
    failed "$LAST_RC"
done

if wanted tests; then
    # shellcheck disable=SC2086
    stage tests "$BUDGET_TESTS" "$PY" -m pytest -q -p no:cacheprovider $KERNEL_TESTS ${TEST_SELECT:+-k "$TEST_SELECT"}
    failed "$LAST_RC"
fi

# the stacked sweep engine (issue 19): the seed configuration, 8 seeds per recipe in one stack, against
# the same 8 runs one after another (rehearsed: 2 small members); the ratio is in the stage's log
for recipe in wgan book; do
    wanted "stack_$recipe" || continue
    if [ "$REHEARSE" -eq 1 ]; then stack_args="--members 2 --epochs 1 --batch-size 8"; else stack_args="--members 8 --epochs 5 --batch-size 512"; fi
    # shellcheck disable=SC2086
    stage "stack_$recipe" "$BUDGET_STACK" "$PY" bench/stack_throughput.py --device auto --recipe "$recipe" $stack_args
    failed "$LAST_RC"
done

if wanted compile; then  # cold compiles last: a timeout here loses nothing measured before
    if [ "$REHEARSE" -eq 1 ]; then   # on a CPU the compile section has no case; its ids must still exist
        COMPILE_CMD=("$PY" -m wgan.check --device cpu --quick --sections compile --jsonl "$RESULTS")
    else
        COMPILE_CMD=(bash -c "\"$PY\" -m wgan.check --sections compile --jsonl \"$RESULTS\" && \
            \"$PY\" -m pytest -q -p no:cacheprovider $BENCH_FILES -k 'cuda and compile and not 50m' \
            --benchmark-only --benchmark-json=\"$OUT_DIR/bench_compile.json\"")
    fi
    stage compile "$BUDGET_COMPILE" "${COMPILE_CMD[@]}"
    failed "$LAST_RC"
fi

echo "== stages (name, seconds, budget, exit status)"
column -t "$OUT_DIR/stages.tsv" 2>/dev/null || cat "$OUT_DIR/stages.tsv"
echo "== ratios"
# from results.jsonl, not the benchmark JSON files: a file stopped at its budget writes no JSON, but
# each case it finished has its line there
if grep -q '"section": "bench"' "$RESULTS" 2>/dev/null; then
    timeout "$BUDGET_RATIOS" "$PY" bench/ratios.py "$RESULTS" || { rc=$?; failed "$rc"; }
else
    echo "gpu_check: no benchmark case finished (no bench line in $RESULTS)"
fi
echo "gpu_check: every result is in $RESULTS"
exit "$status"
