# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean wheel gpu-check chromium

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

test: $(STAMP) chromium
	$(BIN)/python -m pytest tests -q -m "not gpu"

# tests/serve drive the page in the system's headless Chromium (Debian package; Playwright's own
# browser download cannot work offline). Installed when missing where apt and root allow it;
# elsewhere the browser tests skip and say why.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		( (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || \
		  echo "make: could not install chromium with apt; the browser tests will skip" )

bench: $(STAMP)
	$(BIN)/wmfast bench vq --json bench-vq.json
	$(BIN)/wmfast bench attention --json bench-attention.json
	$(BIN)/wmfast bench rollout --json bench-rollout.json

clean:
	rm -rf $(VENV) build dist *.egg-info wmfast/_C*.so wmfast/_build_info.json

# A wheel with the compiled extension (built against the installed torch, recorded in
# wmfast/_build_info.json), the Triton kernels and the export package.
wheel: $(STAMP)
	$(BIN)/pip wheel -q --no-build-isolation --no-deps -w dist .
	$(BIN)/python tools/check_wheel.py dist/wmfast-0.1.0-*.whl

# On a CUDA machine: the GPU test subset and every benchmark in under 8 minutes, JSON under
# benchmarks/results/. GPU_PY=python3 runs it with that interpreter instead of .venv (a machine whose
# CUDA torch is already installed: `WMFAST_NO_EXTENSION=1 pip install --no-deps -e .` first).
GPU_PY ?=
gpu-check:
	$(if $(GPU_PY),WMFAST_ALLOW_NO_EXTENSION=1 $(GPU_PY),$(MAKE) install && $(BIN)/python) benchmarks/gpu_check.py

