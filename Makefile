# Two entry points: `make demo` (the main job, no broker, no server) and
# `make test` (the whole suite). Each sets up .venv from scratch if needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q

.PHONY: demo test test-under-load bench clean

$(VENV)/.core-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

# torch==2.13.0 first: the CPU build on disk; the package's own range admits it,
# so the ml extra pulls nothing bigger.
# promtool and amtool (Debian's Prometheus 2.42 and Alertmanager 0.25): the rule
# and routing tests run the real binaries; chromium: the incident page's screenshot test.
$(VENV)/.test-installed: pyproject.toml $(VENV)/.core-installed
	command -v promtool >/dev/null && command -v amtool >/dev/null && command -v chromium >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-alertmanager chromium; }
	$(PIP) torch==2.13.0
	$(PIP) -e '.[ml,onnx,kafka,test]'
	touch $@

demo: $(VENV)/.core-installed
	$(VENV)/bin/fairwatch demo

test: $(VENV)/.test-installed
	$(PY) -m pytest

# The suite with two busy loops beside it, as on a shared machine: readiness limits must hold there too.
test-under-load: $(VENV)/.test-installed
	$(PY) -c 'while True: pass' & a=$$!; $(PY) -c 'while True: pass' & b=$$!; \
		$(PY) -m pytest; status=$$?; kill $$a $$b; exit $$status

bench: $(VENV)/.test-installed
	$(PY) -m benchmarks.core

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
