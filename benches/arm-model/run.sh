#!/usr/bin/env bash
# The per-kernel cost model of our ARM kernels and llama.cpp's, on this x86 machine (docs/arm.md).
#
#   benches/arm-model/run.sh [--json FILE] [--chips LIST] [--no-llamacpp] [--context N] [--keep DIR]
#
# Steps (cached under the work folder, so a second run only re-models):
#   1. Our kernels: the kernels crate's `variants` test binary, cross-built for aarch64 in release
#      (the workspace's release profile: fat LTO, one codegen unit, as `infer` is built), with v0
#      symbol mangling so that every generic instance has its own name.
#   2. llama.cpp's ARM kernels: ggml-cpu's arch/arm/quants.c and repack.cpp from the llama-cpp-python
#      sdist that benches/compare-llamacpp.sh uses (same cache folder), compiled `-O3 -mcpu=<chip>`
#      with gcc per chip (objects only).
#   3. benches/arm-model/model.py: the hot loop of every kernel from objdump, llvm-mca per -mcpu,
#      predicted one-core decode tokens/s per chip and model; a table, and JSON rows with --json.
#
# Options (flag, or environment variable; flags win):
#   --json FILE        ARM_MODEL_JSON                 also write the rows as a JSON list
#   --chips LIST       ARM_MODEL_CHIPS    all seven   llvm-mca -mcpu list: neoverse-n1,neoverse-v1,
#                                                     neoverse-v2,neoverse-n2,tsv110,cortex-a76,cortex-a72
#   --no-llamacpp                                     our kernels only (no sdist download)
#   --context N        ARM_MODEL_CONTEXT  128         positions in the KV cache at the modelled token
#   --keep DIR                                        keep every snippet and llvm-mca report here
#   --dir DIR          ARM_MODEL_DIR      ${TMPDIR:-/tmp}/edgeinfer-arm-model   work folder
#   environment only:
#     LLAMACPP_DIR       ${TMPDIR:-/tmp}/edgeinfer-llamacpp   where compare-llamacpp.sh keeps the sdist
#     LLAMACPP_VERSION   0.3.36
#     BUILD_JOBS         1                            cargo -j
#     PYTHON             python3
#
# Needs (it installs nothing): llvm-mca-19 (Debian: llvm-19), aarch64-linux-gnu-gcc, -g++ and
# -objdump (gcc-aarch64-linux-gnu g++-aarch64-linux-gnu binutils-aarch64-linux-gnu), the Rust
# target aarch64-unknown-linux-gnu (rustup target add), and pip for the llama.cpp sdist.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$repo/benches/arm-model"
json=${ARM_MODEL_JSON:-}
chips=${ARM_MODEL_CHIPS:-neoverse-n1,neoverse-v1,neoverse-v2,neoverse-n2,tsv110,cortex-a76,cortex-a72}
context=${ARM_MODEL_CONTEXT:-128}
dir=${ARM_MODEL_DIR:-"${TMPDIR:-/tmp}/edgeinfer-arm-model"}
llamacpp=1
keep=
llama_dir=${LLAMACPP_DIR:-"${TMPDIR:-/tmp}/edgeinfer-llamacpp"}
version=${LLAMACPP_VERSION:-0.3.36}
jobs=${BUILD_JOBS:-1}
python=${PYTHON:-python3}
target=aarch64-unknown-linux-gnu

say() { printf 'arm-model: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --no-llamacpp) llamacpp=0; shift; continue ;;
        --*) [ $# -ge 2 ] || die "$1 needs a value" ;;
    esac
    case $1 in
        --json) json=$2 ;;
        --chips) chips=$2 ;;
        --context) context=$2 ;;
        --keep) keep=$2 ;;
        --dir) dir=$2 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift 2
done
[ -n "$json" ] && case $json in /*) ;; *) json="$PWD/$json" ;; esac
[ -n "$keep" ] && case $keep in /*) ;; *) keep="$PWD/$keep" ;; esac

missing=()
for tool in llvm-mca-19 aarch64-linux-gnu-gcc aarch64-linux-gnu-objdump "$python"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ "$llamacpp" = 1 ] && ! command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 && missing+=(aarch64-linux-gnu-g++)
if [ ${#missing[@]} -gt 0 ]; then
    die "missing ${missing[*]}: apt-get install llvm-19 gcc-aarch64-linux-gnu g++-aarch64-linux-gnu binutils-aarch64-linux-gnu"
fi
rustup target list --installed 2>/dev/null | grep -qx "$target" \
    || die "the Rust target $target is missing: rustup target add $target"

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# --- 1. our kernels ------------------------------------------------------------------------------
say "building the kernels crate for $target (release, v0 symbols) in $dir/target"
bin=$(cd "$repo" && CARGO_TARGET_DIR="$dir/target" RUSTFLAGS="-C symbol-mangling-version=v0" \
    cargo test --release --no-run -j "$jobs" -p edgeinfer-kernels --target "$target" \
    --test variants --message-format=json 2>/dev/null \
    | "$python" -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])') || die "cargo build failed (run the command above without --message-format to see why)"
[ -n "$bin" ] && [ -f "$bin" ] || die "no test binary came out of cargo"
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
say "ours: $bin (commit $commit$(git -C "$repo" diff --quiet -- kernels 2>/dev/null || echo ', kernels/ modified'))"

# --- 2. llama.cpp's kernels ----------------------------------------------------------------------
args=(--ours "$bin" --chips "$chips" --context "$context")
if [ "$llamacpp" = 1 ]; then
    # shellcheck source=benches/llamacpp-source.sh
    . "$repo/benches/llamacpp-source.sh"
    llamacpp_source "$llama_dir" "$version" "$python"
    src=$llamacpp_src
    say "llama.cpp $(cat "$src/.edgeinfer-llamacpp-commit" 2>/dev/null || echo '?') from llama-cpp-python $version"
    ggml="$src/ggml/src"
    inc=(-I"$ggml" -I"$ggml/ggml-cpu" -I"$src/ggml/include")
    # gcc 12 has no -mcpu=neoverse-v2: Graviton4's objects are built for neoverse-n2 (also Armv9.0
    # with 128-bit SVE2, i8mm and bf16); targets.py names the flag used per chip.
    for cpu in $("$python" -c "import sys; sys.path.insert(0, '$here'); import targets
want = set('$chips'.split(','))
print(' '.join(sorted({c.gcc for c in targets.CHIPS if c.mcpu in want})))"); do
        out="$dir/llama/$cpu"
        if [ ! -f "$out/repack.o" ] || [ "$out/repack.o" -ot "$ggml/ggml-cpu/arch/arm/repack.cpp" ]; then
            say "compiling llama.cpp's quants.c and repack.cpp with -O3 -mcpu=$cpu"
            mkdir -p "$out"
            aarch64-linux-gnu-gcc -O3 -mcpu="$cpu" -std=gnu11 -D_GNU_SOURCE "${inc[@]}" \
                -c "$ggml/ggml-cpu/arch/arm/quants.c" -o "$out/quants.o"
            aarch64-linux-gnu-g++ -O3 -mcpu="$cpu" -std=gnu++17 -D_GNU_SOURCE "${inc[@]}" \
                -c "$ggml/ggml-cpu/arch/arm/repack.cpp" -o "$out/repack.o"
        fi
    done
    args+=(--llama "$dir/llama")
fi

# --- 3. the model --------------------------------------------------------------------------------
[ -n "$json" ] && args+=(--json "$json")
[ -n "$keep" ] && args+=(--keep "$keep")
"$python" "$here/model.py" "${args[@]}"
[ -n "$json" ] && say "wrote $json"
exit 0
