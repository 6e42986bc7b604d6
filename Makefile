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

.PHONY: demo test install bench clean

$(STAMP): setup.cfg pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SOURCE) -c $(CONSTRAINTS) -e ".[all,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/facevae demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/data_load.py

clean:
	rm -rf $(VENV) demo_out .cache *.egg-info
