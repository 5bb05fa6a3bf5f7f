# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

# torch first (exact pin: the local CPU build here, the CUDA build from PyPI on GPU machines),
# then the package without build isolation so the extension compiles against that torch.
$(STAMP): $(BIN)/python setup.py pyproject.toml $(wildcard csrc/*.cpp)
	$(BIN)/pip install -q torch==2.13.0 ninja pybind11
	$(BIN)/pip install -q --no-build-isolation -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/wmfast demo

test: $(STAMP)
	$(BIN)/python -m pytest tests -q -m "not gpu"

bench: $(STAMP)
	$(BIN)/wmfast bench vq --json bench-vq.json
	$(BIN)/wmfast bench attention --json bench-attention.json
	$(BIN)/wmfast bench rollout --json bench-rollout.json

clean:
	rm -rf $(VENV) build *.egg-info wmfast/_C*.so
