#!/usr/bin/env bash
# gpu_check.sh - the CUDA backend's checks, for a machine with a GPU: the
# op-by-op parity suite (cuda against cpu_ref), then `gkrun verify` of every
# reference model in f32, f16 and bf16 on the cuda backend, with a compact
# summary. Exits non-zero when anything fails, and also when the suite skips
# (on a GPU machine a skip means the GPU was not usable).
#
# Run from the repository root with the build folder beside it:
#   BUILD=build tools/gpu_check.sh        (LD_LIBRARY_PATH is the caller's)
# Not here: building (do that first), benchmarks (gkrun bench).
set -u

BUILD=${BUILD:-build}
if [ ! -d "$BUILD" ] || [ ! -d tests/data/models ]; then
    echo "gpu_check: run from the repository root, with the build in '$BUILD' (set BUILD=...)" >&2
    exit 2
fi
BUILD_ABS=$(cd "$BUILD" && pwd)
GKRUN="$BUILD_ABS/tools/gkrun"
SUITE="$BUILD_ABS/tests/gpu/test_cuda_ops"
LOG=${LOG:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$LOG"
failed=0
summary=()

# ------------------------------------------------ op parity (Criterion)
if [ ! -x "$SUITE" ]; then
    echo "gpu_check: $SUITE is missing (was the build configured with CUDA?)" >&2
    exit 2
fi
echo "== cuda_ops: cuda vs cpu_ref, op by op (log: $LOG/cuda_ops.log)"
(cd tests && GK_TEST_BUILD_ROOT="$BUILD_ABS" GK_TEST_DATA="$PWD/data" \
    "$SUITE" --jobs "${JOBS:-4}" --verbose) >"$LOG/cuda_ops.log" 2>&1
rc=$?
grep -E "^\[(FAIL|----)\]|Synthesis|^cuda_ops: " "$LOG/cuda_ops.log" | grep -v "Criterion v" | head -40
case $rc in
0) summary+=("cuda_ops                          PASS") ;;
77) summary+=("cuda_ops                          SKIP (GPU not usable)"); failed=1 ;;
*) summary+=("cuda_ops                          FAIL (exit $rc)"); failed=1 ;;
esac

# ----------------------------------------------- models end to end
for model in gpt2-tiny llama-tiny llama-tiny-f16-sharded qwen3-tiny; do
    for dtype in f32 f16 bf16; do
        name="$model/$dtype"
        log="$LOG/verify-$model-$dtype.log"
        "$GKRUN" verify "tests/data/models/$model" --backend cuda --dtype "$dtype" >"$log" 2>&1
        rc=$?
        line=$(grep -E "^summary:" "$log" | tail -1)
        if [ $rc -eq 0 ]; then
            summary+=("$(printf '%-33s PASS  %s' "$name" "$line")")
        else
            summary+=("$(printf '%-33s FAIL  %s' "$name" "${line:-exit $rc}")")
            grep -E "FAIL|error|rror:" "$log" | head -8 | sed 's/^/    /'
            failed=1
        fi
    done
done

echo
echo "== summary (logs in $LOG)"
printf '%s\n' "${summary[@]}"
if [ $failed -ne 0 ]; then
    echo "gpu_check: FAIL"
    exit 1
fi
echo "gpu_check: PASS"
