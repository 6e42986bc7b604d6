# Two set-up commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The exact tested versions (setup.cfg holds only compatible ranges).
CONSTRAINTS := constraints.txt
# constraints.txt pins torch's CPU build (+cpu): it comes from the local wheels when /opt/wheels
# exists, else from PyTorch's CPU index (PyPI's torch is the CUDA build, gigabytes larger).
TORCH_SOURCE := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)

.PHONY: demo test install browser bench clean

$(STAMP): setup.cfg pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SOURCE) -c $(CONSTRAINTS) -e ".[all,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/facevae demo --out demo_out

# tests/browser drive the system Chromium through Selenium (no browser download at run time). When
# chromium or chromedriver is missing and we may install packages (root with apt-get, as in CI), the
# Debian packages are installed; otherwise nothing happens and those tests skip with the reason.
# Never fails: a failed install only means skipped browser tests.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium and chromium-driver for the browser tests (apt-get)"; \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	    chromium chromium-driver) >/dev/null 2>&1 || echo "could not install chromium: the browser tests will skip"; \
	fi

# The suite runs its files in parallel worker processes (pytest-xdist), one per core up to 4 (a
# worker holds about 2 GB), each on one thread: torch's OpenMP collapses when processes share the
# cores. A file stays in one worker (--dist loadfile), so its module fixtures are built once.
# On 2 cores: 14 min 42 s as plain `pytest -q` (one file after another, the frameworks' own threads),
# 9 min 17-35 s in 2 workers. TEST_JOBS=0: no workers (still one thread).
TEST_JOBS ?= auto
test: $(STAMP) browser
	OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 \
	  $(PY) -m pytest -q -n $(TEST_JOBS) --maxprocesses 4 --dist loadfile

bench: $(STAMP)
	$(PY) benchmarks/data_load.py

clean:
	rm -rf $(VENV) demo_out .cache *.egg-info
