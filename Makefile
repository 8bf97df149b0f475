# mmkit - convenience targets wrapping CMake.  See README.md.
#   make bench        build (release) + mmkit features + every seed comparison
#   make bench-full   the same with the complete benchmark grids
#   make test         build + every test (ctest)
#   make test-asan    every test under ASan+UBSan
#   make test-kernels the unit tests inside QEMU on Linux 5.10, 6.1 and 6.12
#   make install PREFIX=/usr/local
BUILD    ?= build
ASAN     ?= build-asan
PREFIX   ?= /usr/local
JOBS     ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps build bench bench-full test test-asan test-kernels install clean

all: build

deps-%:
	@scripts/deps.sh build $*

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

build: deps-build $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

bench: deps-bench build
	@bench/run.sh $(BUILD)

bench-full: deps-bench build
	@MMK_BENCH_MODE=full bench/run.sh $(BUILD)

test: deps-test build
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

test-asan: deps-asan
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DMMK_SANITIZE=ON -DMMK_BUILD_BENCH=OFF $(CMAKE_FLAGS) >/dev/null
	cmake --build $(ASAN) -j$(JOBS)
	MMK_TEST_SCALE=$${MMK_TEST_SCALE:-0.3} ctest --test-dir $(ASAN) --output-on-failure -j$(JOBS)

# Kernel packages and QEMU missing: fails unless MMK_ALLOW_NO_KERNELS=1.
test-kernels: deps-test build
	@scripts/deps.sh kernels || echo "test-kernels: could not install the 'kernels' package group" >&2
	@scripts/kernels/run.sh $(BUILD)

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) $(ASAN)

# Seed 002 (profiler): both case studies at full size, plots and interpretation
# in $(BUILD)/case-studies (~4 min; as root with a swap file and a memory cgroup,
# both undone at exit).
.PHONY: case-studies
case-studies: deps-bench build
	$(BUILD)/mmkit prof case-study 1 --out $(BUILD)/case-studies
	$(BUILD)/mmkit prof case-study 2 --out $(BUILD)/case-studies

# Seed 004 (recoverable memory): long crash soak of mmk_rvm (SIGKILL, simulated
# power cuts, EIO), MINUTES=10 by default; prints the seed of any failure.
.PHONY: soak-rvm
soak-rvm: deps-test build
	bench/rvm_soak.sh $(BUILD) $${MINUTES:-10}
