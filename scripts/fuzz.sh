#!/usr/bin/env bash
# Runs edgeinfer's fuzz targets (fuzz/, cargo-fuzz + libFuzzer; nightly Rust).
#
#   scripts/fuzz.sh smoke [SECONDS]          every target SECONDS (default 5) from its seeds, in a
#                                            throwaway corpus, libFuzzer seed $FUZZ_SEED (default 1):
#                                            the test step (scripts/test.sh)
#   scripts/fuzz.sh run TARGET [SECONDS]     one target (default 600 s) on fuzz/corpus/TARGET (kept,
#                                            git-ignored) plus the seeds; crashes go to fuzz/artifacts/
#   scripts/fuzz.sh list                     the targets
#
# Every run: one process (libFuzzer without -jobs/-fork); an input may use at most 512 MB
# (-rss_limit_mb, -malloc_limit_mb) and 10 s; inputs are capped per target (-max_len). Built
# without a sanitizer (the code under test is safe Rust; libFuzzer's coverage and the allocation
# limits do the work) and with debug assertions, so an arithmetic overflow is a crash. The first
# build compiles edgeinfer, candle-core and tokenizers with coverage instrumentation: ~5 min on
# 2 cores, then cached in fuzz/target.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(safetensors config tokenizer gguf chat event openai)
max_len() {
    case "$1" in
        safetensors) echo 131072 ;;
        config) echo 4096 ;;
        tokenizer | gguf) echo 65536 ;;
        chat | event | openai) echo 8192 ;;
    esac
}

# Inputs that once crashed a target (tests/fuzz_regressions.rs replays them too).
regressions() {
    [ -d "fuzz/regressions/$1" ] && echo "fuzz/regressions/$1"
    true
}

need_tools() {
    if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        echo "error: the fuzz step needs nightly Rust and cargo-fuzz:" >&2
        echo "  rustup toolchain install nightly --profile minimal" >&2
        echo "  cargo install cargo-fuzz --locked" >&2
        echo "or set EDGEINFER_SKIP_FUZZ=1 to skip it." >&2
        exit 1
    fi
}

FLAGS=(--sanitizer none --debug-assertions)

# run_target TARGET SECONDS CORPUS...
run_target() {
    local t=$1 secs=$2
    shift 2
    cargo +nightly fuzz run "${FLAGS[@]}" "$t" "$@" -- \
        -max_total_time="$secs" -rss_limit_mb=512 -malloc_limit_mb=512 -timeout=10 \
        -max_len="$(max_len "$t")" -print_final_stats=1 ${seed:+-seed="$seed"} \
        -artifact_prefix="fuzz/artifacts/$t/"
}

cmd=${1:-smoke}
case "$cmd" in
    list) printf '%s\n' "${TARGETS[@]}" ;;
    smoke)
        need_tools
        secs=${2:-5}
        # A fixed seed: the test step explores the same inputs on every run (up to its time
        # limit), so CI does not go red on a new input by chance; long runs (`run`) stay random.
        seed=${FUZZ_SEED:-1}
        mkdir -p fuzz/artifacts
        cargo +nightly fuzz build "${FLAGS[@]}"
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        for t in "${TARGETS[@]}"; do
            mkdir -p "$tmp/$t" "fuzz/artifacts/$t"
            echo "--- fuzz $t (${secs}s)"
            if ! run_target "$t" "$secs" "$tmp/$t" "fuzz/seeds/$t" $(regressions "$t") >"$tmp/$t.log" 2>&1; then
                grep -v '^\s*\[' "$tmp/$t.log" | tail -n 40 | cut -c1-400 >&2
                echo "error: fuzz target $t failed; the input is in fuzz/artifacts/$t/ (reproduce:" \
                    "cargo +nightly fuzz run ${FLAGS[*]} $t fuzz/artifacts/$t/<file>)" >&2
                exit 1
            fi
            grep -E '^(stat::number_of_executed_units|Done)' "$tmp/$t.log" || true
        done
        ;;
    run)
        need_tools
        t=${2:?usage: scripts/fuzz.sh run TARGET [SECONDS]}
        secs=${3:-600}
        mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
        run_target "$t" "$secs" "fuzz/corpus/$t" "fuzz/seeds/$t" $(regressions "$t")
        ;;
    *)
        echo "usage: scripts/fuzz.sh smoke [SECONDS] | run TARGET [SECONDS] | list" >&2
        exit 2
        ;;
esac
