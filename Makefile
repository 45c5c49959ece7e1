# Two commands on a fresh machine: `make demo` (a full run on the bundled data) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# Install torch before the rest: an open torch range pulls a multi-GB CUDA build.
# A CPU-only build elsewhere: make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# `make test` runs the suite on this many pytest-xdist workers (auto: one per CPU core; many tests wait on
# subprocesses: git, dvc, a Prefect server, QEMU). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= auto
export PATH := $(abspath $(VENV))/bin:$(PATH)
export GX_ANALYTICS_ENABLED := False
export DO_NOT_TRACK := 1

# Everything but torch is installed from requirements.lock (exact versions with SHA256 hashes; plain
# pip can use it too), refreshed deliberately with `make lock`. uv installs it (several times faster
# than pip); INSTALLER=pip uses pip alone. Both compile the packages' bytecode at install (pip does by
# default, uv with --compile-bytecode): without it, each Python that imports Prefect, DVC and Great
# Expectations compiles them again wherever bytecode is not written back (PYTHONDONTWRITEBYTECODE, a
# read-only venv): 10.6 s -> 4.8 s for those imports, paid by every stage and CLI process.
LOCK := requirements.lock
INSTALLER ?= uv
UV_VERSION ?= 0.13.9
UV := uv

.PHONY: install lock demo run test test-fast lint docs clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	@if [ "$(INSTALLER)" = uv ] && ($(UV) --version >/dev/null 2>&1 || $(PY) -m pip install -q "uv==$(UV_VERSION)"); then \
		echo "$(UV) pip install -r $(LOCK)"; \
		$(UV) pip install -q --python $(PY) --compile-bytecode --require-hashes -r $(LOCK) && \
		$(UV) pip install -q --python $(PY) --no-deps -e . ; \
	else \
		echo "pip install -r $(LOCK)"; \
		$(PY) -m pip install -q --require-hashes -r $(LOCK) && \
		$(PY) -m pip install -q --no-deps -e . ; \
	fi
	$(PY) -m pip check
	touch $@

# Re-resolve every dependency (newest versions pyproject.toml allows, from PyPI) into $(LOCK).
lock:
	test -x $(PY) || python3 -m venv $(VENV)
	$(UV) --version >/dev/null 2>&1 || $(PY) -m pip install -q "uv==$(UV_VERSION)"
	$(UV) pip compile pyproject.toml --extra dev --universal --python-version 3.11 --generate-hashes \
		--override requirements-overrides.txt --no-emit-package torch --custom-compile-command "make lock" -o $(LOCK)

demo: install
	@test -d .git || (git init -q && git add -A && git commit -qm "edgedistill project" || true)
	@test -d .dvc || dvc init -q
	edgedistill run

run: demo

# OpenMP threads that wait passively: two workers' torch threads on two cores otherwise spin against each other
# (tests/test_training.py + test_teacher_kind.py on 2 workers: 48 s spinning, 36 s passive; 30 s in one process)
test: install
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast: install
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# The documentation site (docs/ -> site/), offline, strict: a broken link or a missing page fails it. The params
# reference and the results pages are generated first (from edgedistill/params.py and benchmarks/results/*.json)
# and never committed (.gitignore): they always match the code they describe, and a params.py edit never leaves a
# stale page behind; tests/test_docs.py checks that the generators cover every key and every results file.
docs: install
	$(PY) docs/gen_params.py
	$(PY) docs/gen_results.py
	$(PY) docs/gen_schemas.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

clean:
	rm -rf reports data/prepared data/raw/readings.parquet models metrics .pytest_cache site

# The MCU path's toolchain (Debian/Ubuntu): ARM cross-compiler, newlib, QEMU for the Cortex-M test run.
# Without it the mcu stage still generates and host-checks the C model and records `not verified`.
MCU_APT := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
.PHONY: mcu-toolchain
mcu-toolchain:
	$(if $(shell command -v sudo 2>/dev/null),sudo,) apt-get update
	$(if $(shell command -v sudo 2>/dev/null),sudo,) apt-get -o DPkg::Lock::Timeout=600 install -y $(MCU_APT)
