# hother-cancelable: every target creates or reuses .venv and installs what it needs.
#
#   make demo       set up, build the C engine, run the showcase on every run mode
#   make test       ctest + build + lint + docs + the pytest matrix (what CI runs)
#   make build      build the extension in place (serialised with flock)
#   make ctest      build and run the C unit tests of csrc/ (closing line "N passed, N failed")
#   make pytest     build, then run the Python tests
#   make sanitize   C tests under ASan+UBSan, TSan and valgrind; a Python stress script under
#                   valgrind; pytest on an ASan+UBSan build (SANITIZE_PARTS selects parts)
#   make lint       ruff check/format --check, mypy --strict, clang-format, cppcheck, duplication
#   make docs       mkdocs build --strict into site/
#   make bench      benchmarks; rewrites docs/performance.md
#   make coverage   line coverage: Python src/, the C binding, csrc/
#   make fuzz       differential parity fuzzing (FUZZ_N programs)
#   make soak       long leak and thread-hammer runs
#   make wheel-test sdist + wheel into a fresh venv, examples run from it
#   make format / clean / venv / postgres / postgres-stop / stress-valgrind
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:

PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ifeq ($(origin CC),default)
CC := gcc
endif

CSRC := $(wildcard csrc/*.c)
CHDR := $(wildcard csrc/*.h)
CTESTS := $(wildcard csrc/tests/*.c)
CTEST_HDR := $(wildcard csrc/tests/*.h)
EXT_DIR := src/hother/cancelable/_ext
PY_DIRS := $(wildcard src tests bench examples scripts)
FORMAT_C ?= $(wildcard csrc/*.c csrc/*.h csrc/tests/*.c csrc/tests/*.h $(EXT_DIR)/*.c $(EXT_DIR)/*.h)

# C unit tests: the core is compiled with the allocation failpoints of csrc/cc_alloc.h.
CTEST_CFLAGS := -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-g -pthread -DCC_ALLOC_FAILPOINTS -Icsrc
CTEST_LIBS := -lm
CTEST_DEPS := $(CSRC) $(CHDR) $(CTESTS) $(CTEST_HDR) Makefile
SANITIZE_PARTS ?= asan tsan valgrind pyvalgrind python
CTEST_BIN := build/ctest/run_tests
ASAN_BIN := build/ctest-asan/run_tests
TSAN_BIN := build/ctest-tsan/run_tests

.PHONY: all venv build demo test ctest pytest lint sanitize bench clean format tools-c coverage fuzz docs wheel-test postgres postgres-stop soak stress-valgrind

all: build

$(STAMP): pyproject.toml scripts/ensure-venv.sh scripts/check_venv.py
	scripts/ensure-venv.sh $(PY) $(VENV) $(STAMP)

venv: $(STAMP)

# Build the extension in place; serialised with flock so parallel builds do not clash.
build: $(STAMP)
	flock .build.lock $(VPY) setup.py -q build_ext --inplace

tools-c:
	@scripts/need-tool.sh $(CC) gcc

$(CTEST_BIN): $(CTEST_DEPS) | tools-c
	@mkdir -p $(@D)
	$(CC) $(CTEST_CFLAGS) -O1 -o $@ $(CSRC) $(CTESTS) $(CTEST_LIBS)

$(ASAN_BIN): $(CTEST_DEPS) | tools-c
	@mkdir -p $(@D)
	$(CC) $(CTEST_CFLAGS) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
		-fno-sanitize-recover=all -o $@ $(CSRC) $(CTESTS) $(CTEST_LIBS)

$(TSAN_BIN): $(CTEST_DEPS) | tools-c
	@mkdir -p $(@D)
	$(CC) $(CTEST_CFLAGS) -O1 -fsanitize=thread -o $@ $(CSRC) $(CTESTS) $(CTEST_LIBS)

ctest: $(CTEST_BIN)
	./$(CTEST_BIN)

pytest: build
	$(VPY) -m pytest -q

# The whole gate: C unit tests, the extension, lint (ruff, mypy, clang-format, cppcheck,
# duplication), the docs site (--strict), then the pytest matrix (4 run modes) incl. the wheel test.
test: ctest build lint docs
	$(VPY) -m pytest -q

# The venv is only needed for the python part (a C-only run works without it).
sanitize: $(if $(filter python,$(SANITIZE_PARTS)),$(STAMP)) $(if $(filter pyvalgrind,$(SANITIZE_PARTS)),build) $(CTEST_BIN) $(ASAN_BIN) $(TSAN_BIN)
	$(if $(filter valgrind,$(SANITIZE_PARTS)),@scripts/need-tool.sh valgrind valgrind)
	SANITIZE_PARTS="$(SANITIZE_PARTS)" VPY=$(VPY) CC=$(CC) CTEST_DIR=build scripts/sanitize.sh

lint: $(STAMP)
	VPY=$(VPY) scripts/lint.sh

format: $(STAMP)
	@scripts/need-tool.sh clang-format clang-format
	$(if $(FORMAT_C),clang-format -i $(FORMAT_C))
	$(VENV)/bin/ruff format $(PY_DIRS)

demo: build
	$(VPY) examples/showcase.py

# Long leak and thread-hammer runs in every run mode; prints memory before/after, callbacks, errors.
soak: build
	$(VPY) scripts/soak.py

# A Python stress script under valgrind (memcheck); fails on an error with a frame in our code.
stress-valgrind: build
	@scripts/need-tool.sh valgrind valgrind
	$(VPY) scripts/stress_valgrind.py --valgrind

# A private PostgreSQL test server (build/postgres); the tests start their own when needed.
postgres:
	scripts/postgres.sh start

postgres-stop:
	scripts/postgres.sh stop

# The documentation site (mkdocs --strict) into site/.
docs: build
	VPY=$(VPY) scripts/docs.sh

# Build sdist + wheel, install the wheel in a fresh venv, run the examples from it.
wheel-test: $(STAMP)
	VPY=$(VPY) scripts/wheel_test.sh

# Benchmarks against asyncio.timeout, anyio and trio; rewrites docs/performance.md.
bench: build
	$(VPY) -m bench

# Line coverage of src/ (Python), of the binding C and of csrc/ (instrumented build out of tree).
coverage: $(STAMP) | tools-c
	VPY=$(VPY) CC=$(CC) CTEST_CFLAGS="$(CTEST_CFLAGS)" scripts/coverage.sh

# Differential parity fuzzing: FUZZ_N generated programs on our engine, anyio and trio.
FUZZ_N ?= 5000
fuzz: build
	VPY=$(VPY) scripts/fuzz.sh $(FUZZ_N)

clean:
	rm -rf build site dist src/hother/cancelable/*.so .build.lock
