# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Any torch >= 2.3 works; this pin picks the CPU build that lies on disk on our machines (no multi-GB CUDA download).
TORCH ?= torch==2.13.0

.PHONY: demo test install browser

$(BIN)/.installed: pyproject.toml Makefile tests/reference_packages.txt
	@ldconfig -p | grep -q 'libEGL.so.1 ' || { echo "installing Mesa EGL (headless OpenGL)"; \
		apt-get update -qq && apt-get install -y -qq libegl1 libgl1-mesa-dri >/dev/null; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps -r tests/reference_packages.txt  # why --no-deps: see that file
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/diffusion4d demo --out outputs/demo

# The viewer's test drives headless Chromium: Debian's package (no browser download), where apt-get exists.
browser:
	@command -v chromium >/dev/null || ! command -v apt-get >/dev/null || { echo "installing chromium (viewer test)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# EXT_meshopt_compression's decoder (in the [gltf] extra) is a C++ source package: built here where a compiler exists
# (about 10 s); without one its tests skip, and the next `make test` tries again.
$(BIN)/.meshopt: $(BIN)/.installed
	$(BIN)/python -m pip install -q "meshoptimizer>=0.2.30a0" && touch $@ || \
		echo "meshoptimizer did not build (no C++ compiler?): the meshopt tests will skip"

test: install browser $(BIN)/.meshopt
	$(BIN)/python -m pytest -q
