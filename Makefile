# fewray: `make demo` runs the main job end to end; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OMNIGLOT_RELEASE ?= ../shared/data/omniglot
CATALOG ?= data/omniglot
DEMO_CONFIG := configs/classification/protonet_conv4_omniglot_demo.yaml
DEMO_DIR ?= runs/demo
# more arguments for both demo steps, e.g. a shorter schedule: make demo DEMO_ARGS="--set train.num_steps=100"
DEMO_ARGS ?=
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

# prints its steps, the training summary and the accuracy line; Ray's own logs stay in Ray's log files
# (FEWRAY_VERBOSE=1 make demo shows them too)
demo: venv data
	@echo "demo 1/2: meta-training ProtoNet Conv4 on Omniglot ($(DEMO_CONFIG)) into $(DEMO_DIR)"
	rm -rf $(DEMO_DIR)
	$(PY) pipelines/metatrain.py --config $(DEMO_CONFIG) --set data.root=$(CATALOG) --output-dir $(DEMO_DIR) $(DEMO_ARGS)
	@echo "demo 2/2: meta-test of the best checkpoint ($(DEMO_DIR)/train_result.json)"
	$(PY) pipelines/metatest.py --config $(DEMO_CONFIG) --set data.root=$(CATALOG) $(DEMO_ARGS) \
		--checkpoint $(DEMO_DIR)/train_result.json --output $(DEMO_DIR)/metatest.json

# two xdist workers: one test's process starts, server start-ups and polling overlap another's compute
test: venv
	$(PY) -m pytest -q -n 2 --dist worksteal --durations=30 tests

mlflow-ui: venv
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf runs mlflow.db
