# Two commands: `make run` starts the platform, `make test` runs the checks and the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
VAR := $(or $(VAR_DIR),var)
# A local checkout runs in development mode unless told otherwise.
DEBUG ?= 1
export DEBUG PORT

.PHONY: run test lint check-types pytest runtime-image runtimes images bench load faults mutate clean

$(VENV)/.installed: requirements.txt requirements-service.txt
	$(PYTHON) -m venv $(VENV)
	# --no-compile: byte-compiling every SDK module up front doubles the install time.
	$(PY) -m pip install --quiet --no-compile -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install --quiet --no-compile -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	@mkdir -p $(VAR)
	@printf '%s\n' '# Written by make run: manage.py in this checkout reads it, so it runs with the' \
	  '# same settings. The environment wins over this file.' 'DEBUG=$(DEBUG)' >$(VAR)/local.env
	$(PY) manage.py migrate --noinput
	$(PY) manage.py bootstrap
	$(PY) manage.py serve --port $(PORT)

test: lint check-types pytest

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

check-types: $(VENV)/.installed-dev
	$(VENV)/bin/mypy sandbox evalplatform executions execution_service tests faults bench scripts

pytest: $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)

# The default runtime's image on the local Docker engine: layers of Debian packages on a
# debootstrap root filesystem (needs root and debootstrap), else from generated Dockerfiles.
runtime-image: $(VENV)/.installed
	$(PY) -m executions.runtime_images

# The runtime catalogue (docs/runtimes.md): build the images of tier $(TIER) and below
# (TIER=all: every entry), seed them as runtimes and self-test each on the local Docker
# engine (EXECUTION_BACKEND to choose another); fails if one fails.
TIER ?= 1
runtimes: $(VENV)/.installed
	@mkdir -p $(VAR)
	$(PY) manage.py migrate --noinput -v0
	EXECUTION_BACKEND=$(or $(EXECUTION_BACKEND),docker) \
	  $(PY) manage.py runtimes $(if $(filter all,$(TIER)),--all,--tier $(TIER)) --build --self-test

# The platform and execution-service images from ./Dockerfile (offline base when no registry).
images: $(VENV)/.installed
	PYTHON=$(PY) scripts/build-images.sh

bench: $(VENV)/.installed-dev
	$(PY) bench/docker_bench.py
	$(PY) bench/end_to_end_bench.py
	$(PY) bench/remote_bench.py
	$(PY) bench/compiled_bench.py

# 1000 submissions through the API against gunicorn, a qcluster, PostgreSQL and Redis
# (DATABASE_URL / REDIS_URL, or the local defaults); checks each ended exactly once.
load: $(VENV)/.installed-dev
	$(PY) bench/api_load.py --count $${COUNT:-1000}

# The fault suite (docs/faults.md): a platform of its own (gunicorn, a qcluster of two workers,
# and a PostgreSQL, a Redis and a Docker engine of its own; needs root and the runtime image on
# the main engine) struck by every fault the recovery promise covers, one table row each; fails
# when a promise broke. FAULTS_ARGS="--only redis-restart --repeat 3" narrows or repeats it.
faults: $(VENV)/.installed-dev
	$(PY) -m faults $(FAULTS_ARGS)

# Mutation testing of the security-critical code with the fast tests that cover it; the report
# (scripts/mutation_report.py) fails on a survivor in a strict scope that nobody explained.
# Takes a while: see docs/mutation-testing.md for the last figures.
mutate: $(VENV)/.installed-dev
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children $${MUTATE_JOBS:-2} $$($(PY) scripts/mutation_report.py --globs)
	$(PY) scripts/mutation_report.py

clean:
	rm -rf $(VENV) var mutants .pytest_cache .mypy_cache .ruff_cache
