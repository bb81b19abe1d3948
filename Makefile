# hother-cancelable: every target creates or reuses .venv and installs what it needs.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CC ?= gcc
CFLAGS_CORE := -std=c11 -Wall -Wextra -Werror -g -pthread -Icsrc
CSRC := $(wildcard csrc/*.c)
CTESTS := $(wildcard csrc/tests/*.c)
EXT_SRC := $(wildcard src/hother/cancelable/_ext/*.c src/hother/cancelable/_ext/*.h) $(CSRC) $(wildcard csrc/*.h) setup.py

.PHONY: all venv build demo test ctest pytest lint sanitize bench clean format

all: build

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel
	$(VPY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Build the extension in place; serialised with flock so parallel builds do not clash.
build: $(STAMP)
	flock .build.lock $(VPY) setup.py -q build_ext --inplace

build/ctest/run_tests: $(CSRC) $(CTESTS) $(wildcard csrc/*.h csrc/tests/*.h)
	mkdir -p build/ctest
	$(CC) $(CFLAGS_CORE) -O1 -o $@ $(CSRC) $(CTESTS)

ctest: build/ctest/run_tests
	./build/ctest/run_tests

pytest: build
	$(VPY) -m pytest -q

test: ctest build
	$(VPY) -m pytest -q

demo: build
	$(VPY) examples/showcase.py

clean:
	rm -rf build src/hother/cancelable/*.so .build.lock
