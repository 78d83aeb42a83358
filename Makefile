# The two commands of the README, and the build behind them. CMake does the real work;
# this file installs what is missing (Debian), then builds, runs or tests.

BUILD      ?= build
TEST_BUILD ?= build-test
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
PORT_BASE  ?= 10000
RUN_DIR    ?= var

# Debian packages: build and run (DEPS), and what the tests use on top (TEST_DEPS).
DEPS      = build-essential cmake pkg-config libevent-dev libssl-dev libsqlite3-dev \
            libc-ares-dev libcrypt-dev zlib1g-dev openssl ca-certificates
TEST_DEPS = libcmocka-dev python3 python3-pytest clang dnsmasq-base isync fetchmail postfix \
            python3-aiosmtpd

.PHONY: all build run test deps test-deps unit integration fuzz docs clean

all: build

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# Installs only what is missing, so a second run costs one dpkg-query.
deps:
	@./scripts/install-deps $(DEPS)

test-deps:
	@./scripts/install-deps $(DEPS) $(TEST_DEPS)

run: deps build
	@./scripts/run-demo $(BUILD)/postamt $(RUN_DIR) $(PORT_BASE)

test: test-deps
	@cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DPOSTAMT_SANITIZE=ON >/dev/null
	@cmake --build $(TEST_BUILD) -j $(JOBS)
	@./scripts/run-tests $(TEST_BUILD)

unit:
	@cmake --build $(TEST_BUILD) -j $(JOBS)
	@cd $(TEST_BUILD) && ctest --output-on-failure

integration:
	@cmake --build $(TEST_BUILD) -j $(JOBS)
	@POSTAMT_BIN=$(abspath $(TEST_BUILD))/postamt /usr/bin/python3 -m pytest -q tests/integration

# libFuzzer targets (clang): make fuzz, then build-fuzz/fuzz/fuzz_NAME tests/fuzz/corpus/fuzz_NAME
fuzz:
	@CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DPOSTAMT_FUZZ=ON -DPOSTAMT_SANITIZE=ON >/dev/null
	@cmake --build build-fuzz -j $(JOBS)

# Regenerates the settings reference in docs/CONFIGURATION.md after a setting changed.
docs: build
	@./scripts/update-config-doc $(BUILD)/postamt

clean:
	rm -rf $(BUILD) $(TEST_BUILD) build-fuzz
