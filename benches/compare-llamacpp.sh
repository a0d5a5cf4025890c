#!/usr/bin/env bash
# Side by side: edgeinfer vs llama.cpp on the same GGUF bytes, the same machine, the same threads.
#
#   benches/compare-llamacpp.sh [options]
#
# Steps (each is cached under the work folder, so a second run only re-measures):
#   1. llama.cpp from the package registry: `pip download` of the llama-cpp-python sdist (pinned;
#      its vendor/llama.cpp is llama.cpp's source), built with CMake (installed into a venv in the
#      work folder when `cmake` is missing): only llama-bench, llama-quantize and llama-completion.
#   2. The same weights for both engines: llama-quantize turns weights/SmolLM2-135M-Instruct.Q4_1.gguf
#      (scripts/fetch-model.sh) into one GGUF per format (--allow-requantize: Q4_1 is dequantized and
#      quantized again), and `infer import` converts each GGUF into edgeinfer's format.
#   3. Both engines, one after the other per format: llama-bench and `infer bench` (pp512, tg128,
#      the same -t list and -r), time to first token from exec (median wall time of `infer run -n 1`
#      vs `llama-completion -n 1`, same prompt, context and threads), and peak RSS of a tg128-only run.
#   4. A table (benches/compare_table.py): test × threads × format, edgeinfer, llama.cpp, ratio;
#      also written as markdown (--markdown FILE, and always RESULTS/table.md).
#
# Options (flag, or environment variable; flags win):
#   --formats LIST          COMPARE_FORMATS     q4_0,q8_0   llama-quantize types, lower case
#                                                           (q4_1 = the fetched GGUF as it is)
#   --threads LIST          COMPARE_THREADS     1,2
#   --reps N                COMPARE_REPS        3           llama-bench -r / infer bench -r
#   --ttft-runs N           COMPARE_TTFT_RUNS   5           timed runs per TTFT cell (after 1 warm-up)
#   --ttft-ctx N            COMPARE_TTFT_CTX    512         -c for the TTFT runs of both engines
#   --markdown FILE         COMPARE_MARKDOWN                also write the markdown table here
#   --dir DIR               LLAMACPP_DIR        ${TMPDIR:-/tmp}/edgeinfer-llamacpp   throwaway work folder
#   --llamacpp-version V    LLAMACPP_VERSION    0.3.36      llama-cpp-python version whose sdist is used
#   --openmp ON|OFF         LLAMACPP_OPENMP     ON          llama.cpp's default (GOMP thread pool)
#   --jobs N                BUILD_JOBS          2           parallel compile jobs
#   environment only:
#     LLAMACPP_CMAKE_ARGS   extra CMake arguments for llama.cpp
#     SOURCE_GGUF           the GGUF to requantize (default weights/SmolLM2-135M-Instruct.Q4_1.gguf)
#     INFER                 an already built `infer` (default: cargo build --release, target/release/infer)
#     PYTHON                python3
#
# Machine load matters: run it on an otherwise idle machine, and read the load averages that the
# table's notes record (on a shared 2-core machine, numbers move by 10-20 % from run to run).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
formats=${COMPARE_FORMATS:-q4_0,q8_0}
threads=${COMPARE_THREADS:-1,2}
reps=${COMPARE_REPS:-3}
ttft_runs=${COMPARE_TTFT_RUNS:-5}
ttft_ctx=${COMPARE_TTFT_CTX:-512}
markdown=${COMPARE_MARKDOWN:-}
dir=${LLAMACPP_DIR:-"${TMPDIR:-/tmp}/edgeinfer-llamacpp"}
version=${LLAMACPP_VERSION:-0.3.36}
openmp=${LLAMACPP_OPENMP:-ON}
jobs=${BUILD_JOBS:-2}
python=${PYTHON:-python3}

say() { printf 'compare-llamacpp: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --*) [ $# -ge 2 ] || die "$1 needs a value" ;;
    esac
    case $1 in
        --formats) formats=$2 ;;
        --threads) threads=$2 ;;
        --reps) reps=$2 ;;
        --ttft-runs) ttft_runs=$2 ;;
        --ttft-ctx) ttft_ctx=$2 ;;
        --markdown) markdown=$2 ;;
        --dir) dir=$2 ;;
        --llamacpp-version) version=$2 ;;
        --openmp) openmp=$2 ;;
        --jobs) jobs=$2 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift 2
done
case $openmp in ON|OFF) ;; *) die "--openmp takes ON or OFF, not $openmp" ;; esac
[ -n "$markdown" ] && case $markdown in /*) ;; *) markdown="$PWD/$markdown" ;; esac
command -v "$python" >/dev/null 2>&1 || die "$python not found (set PYTHON)"

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# --- 1. llama.cpp --------------------------------------------------------------------------------
# shellcheck source=benches/llamacpp-source.sh
. "$repo/benches/llamacpp-source.sh"
llamacpp_source "$dir" "$version" "$python"
src=$llamacpp_src
llamacpp_commit=$(cat "$src/.edgeinfer-llamacpp-commit" 2>/dev/null || true)

if ! command -v cmake >/dev/null 2>&1 || ! command -v ninja >/dev/null 2>&1; then
    if [ ! -x "$dir/venv/bin/cmake" ] || [ ! -x "$dir/venv/bin/ninja" ]; then
        say "installing cmake and ninja with pip into $dir/venv"
        "$python" -m venv "$dir/venv" || die "could not create a venv (python3-venv missing?)"
        "$dir/venv/bin/python" -m pip install --quiet cmake ninja || die "pip install cmake ninja failed"
    fi
    export PATH="$dir/venv/bin:$PATH"
fi

# ISA flags spelled out instead of GGML_NATIVE: -march=native also enables AMX where the CPU
# advertises it, and such builds die with SIGILL on multi-token batches on some of our machines.
# AVX-512 BF16 stays off (only bf16 weights would use it); AVX-512 and VNNI follow /proc/cpuinfo.
cmake_args=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_CCACHE=OFF "-DGGML_OPENMP=$openmp")
case $(uname -m) in
    x86_64|amd64)
        cpuflags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
        has() { case $cpuflags in *" $1 "*) echo ON ;; *) echo OFF ;; esac; }
        cmake_args+=(-DGGML_NATIVE=OFF -DGGML_AVX=ON "-DGGML_AVX2=$(has avx2)" "-DGGML_FMA=$(has fma)"
            "-DGGML_F16C=$(has f16c)" "-DGGML_BMI2=$(has bmi2)" "-DGGML_AVX512=$(has avx512f)"
            "-DGGML_AVX512_VNNI=$(has avx512_vnni)" -DGGML_AVX512_BF16=OFF
            -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF) ;;
esac
# shellcheck disable=SC2206
cmake_args+=(${LLAMACPP_CMAKE_ARGS:-})
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
build="$dir/build-$version-openmp-$openmp"
if [ -d "$src/tools/completion" ]; then completion=llama-completion; else completion=llama-cli; fi
if [ ! -f "$build/CMakeCache.txt" ] || [ "$(cat "$build/.edgeinfer-args" 2>/dev/null)" != "${cmake_args[*]}" ]; then
    say "configuring llama.cpp: ${cmake_args[*]}"
    rm -rf "$build"
    cmake -S "$src" -B "$build" "${generator[@]}" "${cmake_args[@]}" > "$dir/configure.log" 2>&1 \
        || die "cmake configure failed; see $dir/configure.log"
    printf '%s' "${cmake_args[*]}" > "$build/.edgeinfer-args"
fi
say "building llama-bench llama-quantize $completion (-j$jobs; cached after the first time)"
cmake --build "$build" --target llama-bench llama-quantize "$completion" -j "$jobs" > "$dir/build.log" 2>&1 \
    || { tail -n 30 "$dir/build.log" >&2; die "llama.cpp build failed; see $dir/build.log"; }
bin="$build/bin"
for b in llama-bench llama-quantize "$completion"; do
    [ -x "$bin/$b" ] || die "$bin/$b was not built"
done

# --- our engine ----------------------------------------------------------------------------------
if [ -n "${INFER:-}" ]; then
    infer=$INFER
else
    say "building infer (cargo build --release)"
    (cd "$repo" && cargo build --release --quiet --bin infer) || die "cargo build failed"
    infer="$repo/target/release/infer"
fi
[ -x "$infer" ] || die "$infer is not executable"

# --- 2. the same weights for both ----------------------------------------------------------------
source_gguf=${SOURCE_GGUF:-"$repo/weights/SmolLM2-135M-Instruct.Q4_1.gguf"}
if [ ! -f "$source_gguf" ]; then
    [ -z "${SOURCE_GGUF:-}" ] || die "SOURCE_GGUF=$source_gguf does not exist"
    say "fetching the model with scripts/fetch-model.sh"
    INFER=$infer "$repo/scripts/fetch-model.sh"
fi
source_name=$(basename "$source_gguf" .gguf)
stem=${source_name%.*}               # SmolLM2-135M-Instruct
source_type=${source_name##*.}       # Q4_1
models="$dir/models"
mkdir -p "$models"
IFS=, read -r -a format_list <<< "$formats"
IFS=, read -r -a thread_list <<< "$threads"
for f in "${format_list[@]}"; do
    upper=$(printf '%s' "$f" | tr '[:lower:]' '[:upper:]')
    gguf="$models/$stem.$upper.gguf"
    if [ "$upper" = "$source_type" ]; then
        ln -sf "$source_gguf" "$gguf"
    elif [ ! -f "$gguf" ] || [ "$source_gguf" -nt "$gguf" ]; then
        say "llama-quantize --allow-requantize $source_name -> $upper"
        "$bin/llama-quantize" --allow-requantize "$source_gguf" "$gguf.partial" "$upper" "$jobs" \
            > "$models/quantize-$f.log" 2>&1 || die "llama-quantize failed; see $models/quantize-$f.log"
        mv -f "$gguf.partial" "$gguf"
    fi
    out="$models/$stem-$f"
    # Re-import whenever the infer binary (hence possibly the importer) or the GGUF changed.
    if [ ! -f "$out/config.json" ] || [ ! -f "$out/.imported" ] || [ "$infer" -nt "$out/.imported" ] \
        || [ "$gguf" -nt "$out/.imported" ]; then
        say "infer import $stem.$upper.gguf -> $out"
        "$infer" import --quiet "$gguf" "$out" > "$models/import-$f.log" 2>&1 \
            || die "infer import failed; see $models/import-$f.log"
        touch "$out/.imported"
    fi
done

# --- 3. measure ----------------------------------------------------------------------------------
results="$dir/results/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$results"
helper="$repo/benches/compare_table.py"
measure() { "$python" "$helper" measure "$@"; }
load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
for f in "${format_list[@]}"; do
    upper=$(printf '%s' "$f" | tr '[:lower:]' '[:upper:]')
    gguf="$models/$stem.$upper.gguf"
    out="$models/$stem-$f"
    say "$f: llama-bench -p 512 -n 128 -t $threads -r $reps"
    "$bin/llama-bench" -m "$gguf" -p 512 -n 128 -t "$threads" -r "$reps" -o json \
        > "$results/llamacpp-$f.json" 2> "$results/llamacpp-$f.log" \
        || die "llama-bench failed; see $results/llamacpp-$f.log"
    say "$f: infer bench -p 512 -n 128 -t $threads -r $reps"
    "$infer" bench -m "$out" -p 512 -n 128 -t "$threads" -r "$reps" --json \
        > "$results/edgeinfer-$f.json" 2> "$results/edgeinfer-$f.log" \
        || die "infer bench failed; see $results/edgeinfer-$f.log"
    for t in "${thread_list[@]}"; do
        say "$f, $t thread(s): time to first token, $ttft_runs runs each"
        measure --runs "$ttft_runs" --warmup 1 --out "$results/ttft-llamacpp-$f-t$t.json" -- \
            "$bin/$completion" -m "$gguf" -t "$t" -c "$ttft_ctx" -n 1 --temp 0 -no-cnv --no-warmup -p Hello
        measure --runs "$ttft_runs" --warmup 1 --out "$results/ttft-edgeinfer-$f-t$t.json" -- \
            "$infer" run -m "$out" -t "$t" -c "$ttft_ctx" -n 1 --temp 0 Hello
        say "$f, $t thread(s): peak RSS of a tg128 run"
        measure --runs 1 --out "$results/rss-llamacpp-$f-t$t.json" -- \
            "$bin/llama-bench" -m "$gguf" -p 0 -n 128 -t "$t" -r 1
        measure --runs 1 --out "$results/rss-edgeinfer-$f-t$t.json" -- \
            "$infer" bench -m "$out" -p 0 -n 128 -t "$t" -r 1
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")

# --- 4. the table --------------------------------------------------------------------------------
edgeinfer_commit=$(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(cd "$repo" && git status --porcelain --untracked-files=no 2>/dev/null)" ] && edgeinfer_commit="$edgeinfer_commit+dirty"
table_args=(table --results "$results" --formats "$formats" --threads "$threads"
    --meta "llama.cpp=llama-cpp-python $version sdist (llama.cpp ${llamacpp_commit:-commit unknown}), OpenMP $openmp, $completion for TTFT"
    --meta "llama.cpp build=${cmake_args[*]}"
    --meta "edgeinfer=$edgeinfer_commit"
    --meta "weights=$source_name requantized with llama-quantize --allow-requantize; both engines read the same GGUF (ours after infer import)"
    --meta "runs=pp/tg: mean ± stddev of $reps repetitions after a warm-up; TTFT: median wall time from exec to exit of $ttft_runs runs after a warm-up (-n 1, prompt \"Hello\", -c $ttft_ctx); RSS: peak of one tg128-only bench process"
    --meta "load average=$load_before before, $load_after after (1/5/15 min)")
"$python" "$helper" "${table_args[@]}" --markdown "$results/table.md"
if [ -n "$markdown" ]; then
    mkdir -p "$(dirname "$markdown")"
    cp "$results/table.md" "$markdown"
    say "markdown table written to $markdown"
fi
say "raw results in $results"
