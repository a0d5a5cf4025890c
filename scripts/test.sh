#!/usr/bin/env bash
# Every test of edgeinfer, as CI runs them (`make test` calls this):
#   0. checks formatting and clippy (warnings are errors),
#   1. builds the workspace's tests once (the test profile is optimised: the real model runs in them),
#   2. fetches and imports SmolLM2-135M-Instruct if missing (scripts/fetch-model.sh),
#   3. runs all workspace tests natively, with the real model required and the x86 kernel variants
#      this CPU has required (a variant that silently skipped would fail the run),
#   3b. runs `infer serve` under the official `openai` Python client (scripts/openai-client-test.sh:
#      a venv in target/openai-venv with pip's `openai`),
#   4. runs every fuzz target (fuzz/) for a few seconds from its seeds (scripts/fuzz.sh smoke; needs
#      nightly Rust and cargo-fuzz; the instrumented build takes ~5 min the first time, then is cached),
#   5. cross-compiles the kernels and models crates to aarch64 and runs their tests under qemu on three
#      CPU models (scripts/test-aarch64.sh).
#
# Environment:
#   EDGEINFER_REQUIRE_VARIANTS   x86 variants that must run (default: those /proc/cpuinfo reports)
#   EDGEINFER_SKIP_OPENAI=1      skip step 3b (no network for pip)
#   EDGEINFER_SKIP_FUZZ=1        skip step 4 (no nightly/cargo-fuzz; otherwise their absence fails)
#   EDGEINFER_FUZZ_SECONDS       seconds per fuzz target in step 4 (default 5)
#   EDGEINFER_SKIP_AARCH64=1     skip step 5 (e.g. no cross toolchain on this machine)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

step "lint (rustfmt, clippy -D warnings)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

step "build (workspace tests + infer)"
cargo test --workspace --no-run

step "model"
INFER=target/debug/infer scripts/fetch-model.sh

if [ -z "${EDGEINFER_REQUIRE_VARIANTS:-}" ] && [ "$(uname -m)" = x86_64 ]; then
    flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
    required=""
    case " $flags " in *" avx2 "*) case " $flags " in *" fma "*) required=avx2 ;; esac ;; esac
    case " $flags " in *" avx512_vnni "*) case " $flags " in *" avx512bw "*) required="$required,avx512_vnni" ;; esac ;; esac
    export EDGEINFER_REQUIRE_VARIANTS=${required#,}
fi
step "native tests (EDGEINFER_REQUIRE_VARIANTS=${EDGEINFER_REQUIRE_VARIANTS:-})"
EDGEINFER_REQUIRE_MODEL=1 cargo test --workspace

if [ "${EDGEINFER_SKIP_OPENAI:-0}" = 1 ]; then
    step "openai client against infer serve SKIPPED (EDGEINFER_SKIP_OPENAI=1)"
else
    step "openai client against infer serve"
    scripts/openai-client-test.sh target/debug/infer
fi

if [ "${EDGEINFER_SKIP_FUZZ:-0}" = 1 ]; then
    step "fuzz smoke run SKIPPED (EDGEINFER_SKIP_FUZZ=1)"
else
    step "fuzz smoke run (every target ${EDGEINFER_FUZZ_SECONDS:-5}s)"
    scripts/fuzz.sh smoke "${EDGEINFER_FUZZ_SECONDS:-5}"
fi

if [ "${EDGEINFER_SKIP_AARCH64:-0}" = 1 ]; then
    step "aarch64 tests SKIPPED (EDGEINFER_SKIP_AARCH64=1)"
    exit 0
fi
for tool in aarch64-linux-gnu-gcc qemu-aarch64; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "error: $tool not found. Install the cross toolchain and emulator:" >&2
        echo "  sudo apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user" >&2
        echo "  rustup target add aarch64-unknown-linux-gnu" >&2
        echo "or set EDGEINFER_SKIP_AARCH64=1 to run the native tests only." >&2
        exit 1
    }
done
step "aarch64 tests under qemu"
scripts/test-aarch64.sh
