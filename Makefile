# fewray: `make demo` runs the main job end to end; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OMNIGLOT_RELEASE ?= ../shared/data/omniglot
CATALOG ?= data/omniglot
DEMO_CONFIG := configs/classification/protonet_conv4_omniglot_demo.yaml
export RAY_AUTH_MODE ?= disabled

.PHONY: venv data demo test mlflow-ui clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

venv: $(VENV)/.installed

$(CATALOG)/catalog.json: | $(VENV)/.installed
	$(PY) pipelines/prepare_data.py omniglot --source $(OMNIGLOT_RELEASE) --out $(CATALOG)

data: $(CATALOG)/catalog.json

demo: venv data
	rm -rf runs/demo
	$(PY) pipelines/metatrain.py --config $(DEMO_CONFIG) --set data.root=$(CATALOG) --output-dir runs/demo
	$(PY) pipelines/metatest.py --config $(DEMO_CONFIG) --set data.root=$(CATALOG) \
		--checkpoint runs/demo/train_result.json --output runs/demo/metatest.json

# two xdist workers: one test's process starts, server start-ups and polling overlap another's compute
test: venv
	$(PY) -m pytest -q -n 2 --dist worksteal --durations=30 tests

mlflow-ui: venv
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf runs mlflow.db
