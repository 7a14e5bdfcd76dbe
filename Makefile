# Two commands for a new user: `make demo` and `make test`. Everything else is pulled in on demand.
MLX_VERSION   := 0.32.4
DEPS          := .deps
# BACKEND=cuda: MLX's CUDA build (mlx-cuda-13) in .deps/mlx-cuda and a build in .build-cuda; the default is the CPU.
BACKEND       ?= cpu
MLX_WHEEL     := $(if $(filter cuda,$(BACKEND)),mlx-cuda-13,mlx-cpu)
MLX_DIR       := $(DEPS)/mlx-$(BACKEND)
export JANUSFLOW_BACKEND := $(BACKEND)
MLX_STAMP     := $(MLX_DIR)/.installed-$(MLX_VERSION)
APT_PACKAGES  := libopenblas-dev libpng-dev libjpeg62-turbo-dev
APT_STAMP     := $(DEPS)/.apt-ok
# Debian's chromium, for the web page's browser test only (make test); where it cannot be had that test is skipped
# with its reason printed.
BROWSER_STAMP := $(DEPS)/.browser-checked
PYTHON        ?= python3
SUDO          := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BUILD_DIR     := $(if $(filter cuda,$(BACKEND)),.build-cuda,.build)
SWIFT_FLAGS   := -c release --build-path $(BUILD_DIR)
CLI           := $(BUILD_DIR)/release/janusflow
# OpenBLAS workers spin (yielding) for about 0.1 s after every sgemm by default; training's thousands of small sgemms
# then keep one of the two cores busy yielding beside MLX's own thread. Sleeping after 2^4 cycles cut the demo's
# system time 90 -> 11 s and its wall time 7% (same numbers: BLAS threading does not change results).
export OPENBLAS_THREAD_TIMEOUT ?= 4

.PHONY: setup build test test-sanitized demo demo-quick docs fuzz clean bench

setup: $(APT_STAMP) $(MLX_STAMP)

# Debian packages: installed only when dpkg says one is missing.
$(APT_STAMP):
	@mkdir -p $(DEPS)
	@if dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then echo "apt: $(APT_PACKAGES) already installed"; \
	else $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(APT_PACKAGES); fi
	@touch $@

$(BROWSER_STAMP):
	@mkdir -p $(DEPS)
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: already installed"; \
	elif { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends chromium; } >/dev/null 2>&1; \
	then echo "chromium: installed for the web page's browser test"; \
	else echo "chromium could not be installed: the web page's browser test (WebPageTests) will be skipped"; fi
	@touch $@

# The pinned MLX wheel (libmlx.so + headers) into a project-local folder. The CUDA build's NVIDIA libraries are
# not installed: the GPU machine brings them (scripts/gpu-check).
$(MLX_STAMP):
	@case "$(BACKEND)" in cpu|cuda) ;; *) echo "BACKEND must be cpu or cuda (got '$(BACKEND)')"; exit 1;; esac
	@mkdir -p $(DEPS)
	rm -rf $(MLX_DIR)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps --target $(MLX_DIR) $(MLX_WHEEL)==$(MLX_VERSION)
	@test -f $(MLX_DIR)/mlx/lib/libmlx.so || { echo "$(MLX_WHEEL) wheel has no mlx/lib/libmlx.so"; exit 1; }
	@touch $@

build: setup
	swift build $(SWIFT_FLAGS) --product janusflow

# Tests run in release mode: the model tests evaluate real networks and debug Swift is 10-50x slower.
test: setup $(BROWSER_STAMP)
	swift build $(SWIFT_FLAGS) --build-tests
	swift test $(SWIFT_FLAGS) --skip-build --disable-swift-testing
	$(PYTHON) scripts/check-readme-commands

demo: build
	$(CLI) demo --out demo-out

demo-quick: build
	$(CLI) demo --quick --out demo-out/quick

# DocC for every library module (catalog: Sources/JanusFlow/JanusFlow.docc). Fails on any DocC warning and on any
# public symbol without a summary. Archives: $(BUILD_DIR)/plugins/Swift-DocC/outputs/MODULE.doccarchive.
DOC_MODULES := JanusFlow JanusFlowImageIO JanusFlowTokenizer JanusFlowServer JanusFlowTraining JanusFlowDemo MLXEngine ShapesWorld PyTorchRandom
docs: setup
	swift package $(SWIFT_FLAGS) --disable-sandbox generate-documentation $(foreach m,$(DOC_MODULES),--target $(m)) --warnings-as-errors
	$(PYTHON) scripts/check-doc-coverage $(BUILD_DIR) $(DOC_MODULES)

# libFuzzer + AddressSanitizer builds of the fuzz targets (Fuzz/Targets, one per reader) in their own build folder,
# then each target SECONDS seconds from its seeds (scripts/fuzz: table, fuzz-out/summary.json, reproducers kept).
SECONDS     ?= 60
FUZZ_BUILD  := .build-fuzz
FUZZ_NAMES  := Safetensors ModelConfig TokenizerJSON TokenizerText PNG JPEG Manifest DemoSettings ServerBodies
FUZZ_FLAGS  := -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xcc -fsanitize=fuzzer-no-link,address \
               -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld
fuzz: setup
	@for name in $(FUZZ_NAMES); do \
	  swift build --build-path $(FUZZ_BUILD) --product Fuzz$$name $(FUZZ_FLAGS) 2>&1 | grep -E "error|Compiling|Build of" ; \
	  test -x $(FUZZ_BUILD)/debug/Fuzz$$name || { echo "fuzz: Fuzz$$name did not build"; exit 1; }; \
	done
	$(PYTHON) scripts/fuzz --bin $(FUZZ_BUILD)/debug --seconds $(SECONDS)

# The engine and kernel tests (and the readers' and the server's) under AddressSanitizer, then the engine and the
# server's worker and queue under ThreadSanitizer: debug builds in their own folders, any report fails the run.
# Leak checking is off here (XCTest on Linux keeps every test case alive, which LeakSanitizer reports); the fuzz
# targets check the readers for leaks.
ASAN_TESTS := MLXEngineTests|JanusFlowImageIOTests|JanusFlowTokenizerTests|PyTorchRandomTests|ServerTests|ServerAuthTests
TSAN_TESTS := MLXEngineTests|ServerTests|ServerAuthTests
test-sanitized: setup
	swift build --build-path .build-asan --build-tests --sanitize=address
	ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 swift test --build-path .build-asan --skip-build --sanitize=address \
	  --disable-swift-testing --filter "$(ASAN_TESTS)"
	swift build --build-path .build-tsan --build-tests --sanitize=thread
	TSAN_OPTIONS=halt_on_error=1:suppressions=$(CURDIR)/scripts/sanitizers/tsan.supp swift test --build-path .build-tsan \
	  --skip-build --sanitize=thread --disable-swift-testing --filter "$(TSAN_TESTS)"

bench: build
	$(CLI) bench kernels

clean:
	rm -rf .build .build-cuda
