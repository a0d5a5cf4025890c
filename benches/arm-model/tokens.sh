#!/usr/bin/env bash
# Instructions per decoded token by emulation: edgeinfer's aarch64 `infer` and llama.cpp's aarch64
# `llama-bench`, one thread, the same GGUF bytes, run under qemu-aarch64 with a TCG plugin
# (tcg/insn-count.c) that counts the guest instructions executed. Each engine runs twice, decoding
# N1 and N2 tokens; (I2 - I1) / (N2 - N1) is the count per decoded token without load and prefill.
# This checks the llvm-mca model (run.sh) from the other side: whole tokens, every instruction,
# but no timing (an instruction count says nothing about cycles, caches or memory bandwidth).
#
#   benches/arm-model/tokens.sh [options]
#
# Steps, each cached under the work folder:
#   1. the plugin (host gcc), checked on tcg/loop.c, whose count is known exactly;
#   2. infer for aarch64-unknown-linux-gnu (cargo build --release);
#   3. llama.cpp for aarch64 from the sdist that benches/compare-llamacpp.sh fetches (run that
#      once first), cross-built with the GNU toolchain, static, no OpenMP, twice: ARM_ARCH_N1 for
#      -cpu neoverse-n1 and ARM_ARCH_MAX (adds i8mm) for -cpu max. Its CPU features are fixed at
#      compile time, so each build runs only on the matching -cpu;
#   4. the models: llama-quantize (the aarch64 build, under qemu) requantizes the Q4_1 GGUF to each
#      format, with the token embedding / output matrix in q8_0 as edgeinfer's quantize stores it
#      (llama.cpp's default would be q6_K, which edgeinfer's import turns into q8_0: not the same
#      bytes); `infer import` of that GGUF (for q4_0 also `--layout rows8`), and `infer quantize` of
#      the F32 checkpoint;
#   5. the runs: per -cpu and format, llama-bench -p 0 -n N -r 1 -t 1 (with repack, its default,
#      and --repack 0), and infer run -t 1 --temp 0 --ignore-eos -n N on both edgeinfer models;
#      a table of instructions per decoded token and the ratio edgeinfer / llama.cpp (repacked).
#
# Options (flag, or environment variable):
#   --cpus LIST      TOKENS_CPUS     neoverse-n1,max   qemu -cpu values
#   --formats LIST   TOKENS_FORMATS  q4_0,q8_0
#   --n1 N / --n2 N  TOKENS_N1/N2    1 / 17            tokens decoded by the two runs
#   --dir DIR        ARM_MODEL_DIR   ${TMPDIR:-/tmp}/edgeinfer-arm-model   work folder (builds, models, counts)
#   environment only:
#     LLAMACPP_DIR     ${TMPDIR:-/tmp}/edgeinfer-llamacpp (where compare-llamacpp.sh keeps the sdist)
#     LLAMACPP_VERSION 0.3.36
#     ARM_ARCH_N1      armv8.2-a+dotprod+fp16 (Neoverse N1's extensions that llama.cpp uses)
#     ARM_ARCH_MAX     armv8.2-a+dotprod+fp16+i8mm (no SVE, though qemu's max has it: llama.cpp's
#                      q4_0 SVE path needs exactly 256-bit vectors, Graviton3's; the NEON paths
#                      are the ones to compare with ours)
#     INFER            an x86 infer for import and quantize (default target/release/infer if it
#                      exists, else the aarch64 build under qemu)
#     BUILD_JOBS       1
#
# Counts of one run are repeatable to ~0.05% (greedy decode, one thread); the prompt differs
# between the engines (llama-bench decodes from position 0, infer after a 5-token prompt), which
# moves attention's share by a few positions of a 576-wide model: negligible.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cpus=${TOKENS_CPUS:-neoverse-n1,max}
formats=${TOKENS_FORMATS:-q4_0,q8_0}
n1=${TOKENS_N1:-1}
n2=${TOKENS_N2:-17}
dir=${ARM_MODEL_DIR:-"${TMPDIR:-/tmp}/edgeinfer-arm-model"}
llamacpp_dir=${LLAMACPP_DIR:-"${TMPDIR:-/tmp}/edgeinfer-llamacpp"}
version=${LLAMACPP_VERSION:-0.3.36}
arch_n1=${ARM_ARCH_N1:-armv8.2-a+dotprod+fp16}
arch_max=${ARM_ARCH_MAX:-armv8.2-a+dotprod+fp16+i8mm}
jobs=${BUILD_JOBS:-1}
sysroot=/usr/aarch64-linux-gnu
prompt="The capital of France is"

say() { printf 'tokens: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --*) [ $# -ge 2 ] || die "$1 needs a value" ;;
    esac
    case $1 in
        --cpus) cpus=$2 ;;
        --formats) formats=$2 ;;
        --n1) n1=$2 ;;
        --n2) n2=$2 ;;
        --dir) dir=$2 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift 2
done
[ "$n2" -gt "$n1" ] || die "--n2 must be larger than --n1"
for tool in qemu-aarch64 gcc aarch64-linux-gnu-gcc aarch64-linux-gnu-g++ cargo; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
mkdir -p "$dir/models" "$dir/counts"
dir=$(cd "$dir" && pwd)

# --- 1. the plugin, checked ----------------------------------------------------------------------
plugin="$dir/insn-count.so"
if [ ! -f "$plugin" ] || [ "$here/tcg/insn-count.c" -nt "$plugin" ]; then
    say "building the plugin"
    gcc -O2 -shared -fPIC -fvisibility=hidden -Wall -Wextra -pthread -o "$plugin" "$here/tcg/insn-count.c"
fi
aarch64-linux-gnu-gcc -O2 -static -o "$dir/loop" "$here/tcg/loop.c"
count() {  # count OUTFILE CPU PROGRAM ARGS...: runs it under qemu (stdout to OUTFILE.stdout),
           # prints the instruction count
    local out=$1 cpu=$2
    shift 2
    rm -f "$out"
    qemu-aarch64 -L "$sysroot" -cpu "$cpu" -plugin "$plugin,out=$out" "$@" > "$out.stdout" \
        || die "failed under qemu -cpu $cpu: $*"
    [ -s "$out" ] || die "the plugin wrote no count for: $*"
    awk '{print $2}' "$out"
}
a=$(count "$dir/counts/loop-a" max "$dir/loop" 1000000)
b=$(count "$dir/counts/loop-b" max "$dir/loop" 3000000)
[ $((b - a)) -eq 4000000 ] || die "plugin check: 2,000,000 more iterations counted $((b - a)), not 4,000,000"
say "plugin check: 2,000,000 more iterations of a 2-instruction loop counted $((b - a)) instructions"

# --- 2. infer for aarch64 ------------------------------------------------------------------------
say "building infer for aarch64 (cargo build --release; fat LTO takes a while the first time)"
(cd "$repo" && cargo build -j "$jobs" --release --quiet -p edgeinfer-cli --target aarch64-unknown-linux-gnu) \
    || die "cargo build for aarch64 failed"
infer_arm="$repo/target/aarch64-unknown-linux-gnu/release/infer"
[ -x "$infer_arm" ] || die "$infer_arm was not built"
if [ -n "${INFER:-}" ]; then
    infer_host=("$INFER")
elif [ -x "$repo/target/release/infer" ]; then
    infer_host=("$repo/target/release/infer")
else
    infer_host=(qemu-aarch64 -L "$sysroot" -cpu max "$infer_arm")
fi

# --- 3. llama.cpp for aarch64 --------------------------------------------------------------------
src="$llamacpp_dir/llama.cpp-$version"
[ -f "$src/CMakeLists.txt" ] || die "no llama.cpp source at $src: run benches/compare-llamacpp.sh once (it fetches it)"
llamacpp_commit=$(cat "$src/.edgeinfer-llamacpp-commit" 2>/dev/null || echo "?")
if ! command -v cmake >/dev/null 2>&1 || ! command -v ninja >/dev/null 2>&1; then
    [ -x "$llamacpp_dir/venv/bin/cmake" ] || die "cmake/ninja missing: run benches/compare-llamacpp.sh once (it installs them)"
    export PATH="$llamacpp_dir/venv/bin:$PATH"
fi
# One build tree for both: a second configure with another -march recompiles only ggml-cpu (the
# only target that takes GGML_CPU_ARM_ARCH), and each build's binaries are copied out.
tree="$dir/llamacpp-$version-aarch64"
build_llamacpp() {  # build_llamacpp NAME MARCH: prints the folder with that build's binaries
    local out="$dir/llamacpp-$version-aarch64-$1" march=$2
    local args=(-DCMAKE_BUILD_TYPE=Release -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64
        -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++
        -DCMAKE_EXE_LINKER_FLAGS=-static -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_CCACHE=OFF -DGGML_OPENMP=OFF
        -DGGML_NATIVE=OFF "-DGGML_CPU_ARM_ARCH=$march")
    if [ -x "$out/llama-bench" ] && [ "$(cat "$out/.edgeinfer-args" 2>/dev/null)" = "${args[*]}" ]; then
        echo "$out"
        return
    fi
    cmake -S "$src" -B "$tree" -G Ninja "${args[@]}" > "$dir/configure-$1.log" 2>&1 \
        || die "cmake configure failed; see $dir/configure-$1.log"
    say "building llama.cpp $version for aarch64, -march=$march (cached after the first time)"
    cmake --build "$tree" --target llama-bench llama-quantize -j "$jobs" > "$dir/build-$1.log" 2>&1 \
        || { tail -n 30 "$dir/build-$1.log" >&2; die "llama.cpp build failed; see $dir/build-$1.log"; }
    mkdir -p "$out"
    cp -f "$tree/bin/llama-bench" "$tree/bin/llama-quantize" "$out/"
    printf '%s' "${args[*]}" > "$out/.edgeinfer-args"
    echo "$out"
}
IFS=, read -r -a cpu_list <<< "$cpus"
IFS=, read -r -a format_list <<< "$formats"
declare -A llama_bin
for cpu in "${cpu_list[@]}"; do
    case $cpu in
        max) llama_bin[$cpu]=$(build_llamacpp i8mm "$arch_max") ;;
        *) llama_bin[$cpu]=$(build_llamacpp dotprod "$arch_n1") ;;
    esac
done
quantize_bin=${llama_bin[${cpu_list[0]}]}/llama-quantize
quantize_cpu=${cpu_list[0]}

# --- 4. the models -------------------------------------------------------------------------------
source_gguf="$repo/weights/SmolLM2-135M-Instruct.Q4_1.gguf"
f32="$repo/weights/SmolLM2-135M-Instruct-F32"
[ -f "$source_gguf" ] || die "$source_gguf missing (scripts/fetch-model.sh)"
for f in "${format_list[@]}"; do
    upper=$(printf '%s' "$f" | tr '[:lower:]' '[:upper:]')
    gguf="$dir/models/SmolLM2-135M-Instruct.$upper.gguf"
    if [ ! -f "$gguf" ]; then
        say "llama-quantize (aarch64, under qemu) --allow-requantize Q4_1 -> $upper, embedding/output q8_0"
        qemu-aarch64 -cpu "$quantize_cpu" "$quantize_bin" --allow-requantize --token-embedding-type q8_0 \
            --output-tensor-type q8_0 "$source_gguf" "$gguf.partial" "$upper" 1 > "$dir/models/quantize-$f.log" 2>&1 \
            || die "llama-quantize failed; see $dir/models/quantize-$f.log"
        mv -f "$gguf.partial" "$gguf"
    fi
    if [ ! -f "$dir/models/SmolLM2-135M-Instruct-$f-import/.done" ]; then
        say "infer import $(basename "$gguf")"
        "${infer_host[@]}" import --quiet "$gguf" "$dir/models/SmolLM2-135M-Instruct-$f-import" \
            > "$dir/models/import-$f.log" 2>&1 || die "infer import failed; see $dir/models/import-$f.log"
        touch "$dir/models/SmolLM2-135M-Instruct-$f-import/.done"
    fi
    # q4_0 also in the rows8 layout (the same GGUF bytes, reordered at import; docs/formats.md).
    if [ "$f" = q4_0 ] && [ ! -f "$dir/models/SmolLM2-135M-Instruct-$f-import-rows8/.done" ]; then
        say "infer import --layout rows8 $(basename "$gguf")"
        "${infer_host[@]}" import --quiet --layout rows8 "$gguf" "$dir/models/SmolLM2-135M-Instruct-$f-import-rows8" \
            > "$dir/models/import-rows8-$f.log" 2>&1 || die "infer import failed; see $dir/models/import-rows8-$f.log"
        touch "$dir/models/SmolLM2-135M-Instruct-$f-import-rows8/.done"
    fi
    if [ -d "$f32" ] && [ ! -f "$dir/models/SmolLM2-135M-Instruct-$f-quantize/.done" ]; then
        say "infer quantize --type $f $(basename "$f32")"
        "${infer_host[@]}" quantize --quiet --type "$f" "$f32" "$dir/models/SmolLM2-135M-Instruct-$f-quantize" \
            > "$dir/models/quantize-ours-$f.log" 2>&1 || die "infer quantize failed; see $dir/models/quantize-ours-$f.log"
        touch "$dir/models/SmolLM2-135M-Instruct-$f-quantize/.done"
    fi
done

# --- 5. the runs ---------------------------------------------------------------------------------
table="$dir/tokens.tsv"
printf 'cpu\tformat\tengine\tmodel\tkernel\tinsns_n%s\tinsns_n%s\tinsns_per_token\n' "$n1" "$n2" > "$table"
# Each pair of counted runs follows one uncounted run: a first run may write caches that later runs
# read (edgeinfer writes tokenizer.edgeinfer.bin beside a model that lacks it: ~100 M instructions),
# and only the N1 run would pay for them.
warm() { qemu-aarch64 -L "$sysroot" -cpu "$1" "${@:2}" > /dev/null 2>&1 || die "failed under qemu -cpu $1: ${*:2}"; }
row() {  # row CPU FORMAT ENGINE MODEL KERNEL I1 I2
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" $((($7 - $6) / (n2 - n1))) >> "$table"
}
for cpu in "${cpu_list[@]}"; do
    for f in "${format_list[@]}"; do
        upper=$(printf '%s' "$f" | tr '[:lower:]' '[:upper:]')
        gguf="$dir/models/SmolLM2-135M-Instruct.$upper.gguf"
        for repack in 1 0; do
            counts=()
            warm "$cpu" "${llama_bin[$cpu]}/llama-bench" -m "$gguf" -p 0 -n "$n1" -r 1 -t 1 --repack "$repack"
            for n in "$n1" "$n2"; do
                say "llama-bench -cpu $cpu $f repack=$repack -n $n"
                counts+=("$(count "$dir/counts/llama-$cpu-$f-r$repack-$n" "$cpu" "${llama_bin[$cpu]}/llama-bench" \
                    -m "$gguf" -p 0 -n "$n" -r 1 -t 1 --repack "$repack")")
            done
            row "$cpu" "$f" llama.cpp "$upper.gguf" "repack=$repack" "${counts[@]}"
        done
        for m in import import-rows8 quantize; do
            model="$dir/models/SmolLM2-135M-Instruct-$f-$m"
            [ -d "$model" ] || continue
            counts=()
            warm "$cpu" "$infer_arm" run -m "$model" -t 1 --temp 0 --ignore-eos -n "$n1" "$prompt"
            for n in "$n1" "$n2"; do
                say "infer run -cpu $cpu $f ($m) -n $n"
                counts+=("$(count "$dir/counts/infer-$cpu-$f-$m-$n" "$cpu" "$infer_arm" run -m "$model" \
                    -t 1 --temp 0 --ignore-eos -n "$n" --json "$prompt")")
            done
            kernel=$(sed -n 's/.*"kernels":"\([^"]*\)".*/\1/p' "$dir/counts/infer-$cpu-$f-$m-$n2.stdout")
            row "$cpu" "$f" edgeinfer "$m" "${kernel:-?}" "${counts[@]}"
        done
    done
done

# --- the table -----------------------------------------------------------------------------------
say "llama.cpp $version ($llamacpp_commit); edgeinfer $(cd "$repo" && git rev-parse --short HEAD); counts in $table"
awk -F'\t' '
    NR == 1 { printf "%-12s %-5s %-10s %-9s %-13s %14s %14s %12s %7s\n", $1, $2, $3, $4, $5, $6, $7, "per token", "vs l.c"; next }
    { rows[NR] = $0; if ($3 == "llama.cpp" && $5 == "repack=1") base[$1 "/" $2] = $8 }
    END {
        for (i = 2; i <= NR; i++) {
            split(rows[i], c, "\t")
            b = base[c[1] "/" c[2]]
            printf "%-12s %-5s %-10s %-9s %-13s %14s %14s %12s %7s\n", c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8],
                b ? sprintf("%.2f", c[8] / b) : "-"
        }
    }' "$table"
