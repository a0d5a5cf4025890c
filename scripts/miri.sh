#!/usr/bin/env bash
# The kernels' scalar reference and AVX2 variant, and the loader's parsing, under Miri (nightly),
# which interprets the code and fails on undefined behaviour: out-of-bounds or misaligned access,
# use of uninitialised memory, invalid values, data races.
#
#   1. kernels, portable build: the scalar table (Miri reports no CPU features) — the quant
#      reference's unit tests and tests/variants.rs at Miri sizes (testing::RAGGED, K_SIZES);
#   2. kernels with `-C target-feature=+avx2,+fma,+f16c`: tests/variants.rs with the AVX2 table
#      too (Miri cannot detect features at run time, so they are compiled in), i.e. the unsafe
#      SIMD bodies and their safe wrappers — those over f32 and bf16 data: Miri does not implement
#      the F16C conversions (`vcvtps2ph`), so the f16 kernels and rmsnorm (f16 weights) stay out;
#   3. the loader: hostile safetensors headers through `Model::load` (weights read with
#      EDGEINFER_WEIGHTS=copy: Miri cannot map files) and `loader::validate_in_memory`, and the
#      config's validation (its unit tests).
#
# Left out: tests over large shapes (hours interpreted), the quantized-kernel sweep
# (kernels/tests/quant_variants.rs), the AVX-512 table (not tried), and the other bad_input tests
# (each writes and loads a model: ~1 min apiece interpreted).
# Not part of scripts/test.sh: ~12 minutes on the 2-vCPU development VM with the kernels' builds
# cached, ~15 cold (the loader step alone: a 5-min build and 5.5 min of tests).
#
# Needs `rustup toolchain install nightly` and `rustup component add miri rust-src --toolchain nightly`.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }
target=${CARGO_TARGET_DIR:-target}
# Isolation off: the tests read the clock (seeds), the environment and temporary files.
# Deterministic floats: Miri otherwise perturbs `powf`, `exp` &c. by an ulp at random, and the
# config tests compare RoPE frequencies computed twice for equality.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation -Zmiri-deterministic-floats}"
# Seeded (print/replay with EDGEINFER_TEST_SEED like the native runs), but fixed by default so a
# Miri run is repeatable.
export EDGEINFER_TEST_SEED=${EDGEINFER_TEST_SEED:-1}
# Quant unit tests left out: f64 checks over every format and shape.
slow=(--skip matmul_q_matches_f64_within_budget)

step "kernels, scalar (portable build)"
CARGO_TARGET_DIR=$target/miri-portable cargo +nightly miri test -p edgeinfer-kernels \
    --lib --test variants -- "${slow[@]}"

step "kernels, scalar + avx2 (the f32 and bf16 kernels)"
RUSTFLAGS="-C target-feature=+avx2,+fma,+f16c" EDGEINFER_REQUIRE_VARIANTS=avx2 \
    CARGO_TARGET_DIR=$target/miri-avx2 cargo +nightly miri test -p edgeinfer-kernels \
    --test variants -- --exact report_variants dot_f32 axpy_f32 matmul_f32 matmul_bf16 \
    softmax_f32 silu_mul_f32 rope_f32

step "loader and config parsing"
CARGO_TARGET_DIR=$target/miri-portable cargo +nightly miri test -p edgeinfer-models --lib config
EDGEINFER_WEIGHTS=copy CARGO_TARGET_DIR=$target/miri-portable cargo +nightly miri test \
    -p edgeinfer --test bad_input -- --exact in_memory_validation_refuses_hostile_headers \
    truncated_safetensors tensor_offsets_out_of_range overlapping_tensor_offsets
