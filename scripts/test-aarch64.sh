#!/usr/bin/env bash
# Cross-tests the aarch64 kernels on an x86_64 host under qemu user-mode emulation.
#
# Builds the kernels and models test binaries once for aarch64-unknown-linux-gnu (linker and runner come
# from .cargo/config.toml), then runs them on three emulated cores, each requiring the variants it must
# be able to run (EDGEINFER_REQUIRE_VARIANTS), so a detection bug fails instead of silently skipping:
#   max          every feature qemu knows      neon, neon_dotprod, neon_i8mm
#   neoverse-n1  Armv8.2 + dotprod, no i8mm    neon, neon_dotprod
#   cortex-a72   Armv8.0                       neon
# Stops at the first failure. Extra arguments go to the test binaries (e.g. a test name filter).
# Then runs the arm64 Lambda `bootstrap` under qemu against a local Runtime API
# (examples/lambda/tests/lambda.rs).
#
# Needs: rustup target aarch64-unknown-linux-gnu, gcc-aarch64-linux-gnu, libc6-dev-arm64-cross,
# qemu-user. Set PACKAGES="-p edgeinfer-kernels" to test a subset.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
PACKAGES=${PACKAGES:-"-p edgeinfer-kernels -p edgeinfer-models"}
# shellcheck disable=SC2086 # PACKAGES is a word list on purpose.
cargo test --target "$TARGET" $PACKAGES --no-run

CPUS=(
    "max:neon,neon_dotprod,neon_i8mm"
    "neoverse-n1:neon,neon_dotprod"
    "cortex-a72:neon"
)
summary=()
for entry in "${CPUS[@]}"; do
    cpu=${entry%%:*}
    required=${entry#*:}
    log=$(mktemp)
    echo "=== QEMU_CPU=$cpu EDGEINFER_REQUIRE_VARIANTS=$required"
    # shellcheck disable=SC2086
    if ! QEMU_CPU=$cpu EDGEINFER_REQUIRE_VARIANTS=$required \
        cargo test --target "$TARGET" $PACKAGES -- "$@" --show-output 2>&1 | tee "$log"; then
        echo "FAILED on QEMU_CPU=$cpu (log: $log)" >&2
        exit 1
    fi
    passed=$(grep -E '^test result: ok' "$log" | awk '{s += $4} END {print s + 0}')
    binaries=$(grep -cE '^test result: ok' "$log" || true)
    variants=$(grep -m1 -oE 'kernel variants tested: [a-z0-9_,]+' "$log" | cut -d' ' -f4 || true)
    summary+=("$(printf '%-12s ok: %4d tests in %2d binaries; kernel variants: %s' "$cpu" "$passed" "$binaries" "${variants:-?}")")
    rm -f "$log"
done

# The Lambda handler as shipped: the arm64 `bootstrap` of `make lambda-arm64` under qemu, against the
# local Runtime API of examples/lambda/tests/lambda.rs (normal, invalid and late invocations). Built
# with the test profile (no LTO) to keep CI short; LAMBDA_PROFILE=lambda runs the shipped build instead. Skip with
# EDGEINFER_SKIP_LAMBDA=1.
if [ "${EDGEINFER_SKIP_LAMBDA:-0}" != 1 ]; then
    echo "=== Lambda bootstrap (arm64) under qemu"
    make lambda-arm64 LAMBDA_PROFILE="${LAMBDA_PROFILE:-test}"
    EDGEINFER_LAMBDA_BOOTSTRAP=target/lambda/bootstrap \
        cargo test -p edgeinfer-lambda --test lambda -- --ignored arm64_bootstrap_under_qemu --nocapture
    summary+=("lambda       ok: arm64 bootstrap served normal, invalid and late invocations")
fi
echo "=== aarch64 summary"
printf '%s\n' "${summary[@]}"
