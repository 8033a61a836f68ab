# `make test` creates .venv when missing, installs the package with its test extras, runs pytest.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CPU=1: PyTorch's CPU build; CPU=0: the default (CUDA) wheels; empty: CPU build unless nvidia-smi lists a GPU
CPU ?=

.PHONY: test install bench clean proto prototxt demo caffe-oracle

$(STAMP): setup.cfg pyproject.toml install_torch.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	CPU=$(CPU) $(PY) install_torch.py $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# tools against the genuine BVLC Caffe: `bash ../shared/caffe/build.sh BVLC_GIT_DIR WORKDIR` prints the two variables
caffe-oracle: $(STAMP)
	@test -n "$$CAFFE_PY" && test -n "$$CAFFE_PYTHON" || { echo "set CAFFE_PY and CAFFE_PYTHON (../shared/caffe/build.sh prints them)"; exit 2; }
	$(PY) -m pytest -q tests/tools -k real_caffe

# DEMO_ARGS: e.g. --data-root FOLDER (Fashion-MNIST's idx files), --no-download, --labelled photos
demo: $(STAMP)
	$(PY) demo.py --out demo-out $(DEMO_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/convert.py

proto: $(STAMP)
	$(PY) -m tools.caffe.protogen

prototxt: $(STAMP)
	$(PY) -m prototxt

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo-out
