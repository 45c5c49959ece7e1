# Two commands on a fresh machine: `make demo` (a full run on the bundled data) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# Install torch before the rest: an open torch range pulls a multi-GB CUDA build.
# A CPU-only build elsewhere: make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
export PATH := $(abspath $(VENV))/bin:$(PATH)
export GX_ANALYTICS_ENABLED := False
export DO_NOT_TRACK := 1

.PHONY: install demo run test test-fast lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: install
	@test -d .git || (git init -q && git add -A && git commit -qm "edgedistill project" || true)
	@test -d .dvc || dvc init -q
	edgedistill run

run: demo

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf reports data/prepared data/raw/readings.parquet models metrics .pytest_cache

# The MCU path's toolchain (Debian/Ubuntu): ARM cross-compiler, newlib, QEMU for the Cortex-M test run.
# Without it the mcu stage still generates and host-checks the C model and records `not verified`.
MCU_APT := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
.PHONY: mcu-toolchain
mcu-toolchain:
	$(if $(shell command -v sudo 2>/dev/null),sudo,) apt-get update
	$(if $(shell command -v sudo 2>/dev/null),sudo,) apt-get -o DPkg::Lock::Timeout=600 install -y $(MCU_APT)
