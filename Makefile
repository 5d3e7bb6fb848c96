# Two commands on a fresh clone:
#   make app    install into .venv and start the app on the shipped default model
#   make test   install into .venv and run the test suite (what CI runs)
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: app test install onnx smoke bench pacs

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

# ONNX files are build outputs (not in git; model.onnx + onnx.json, the card is
# never rewritten): exported once for fast CPU inference; without them the app
# runs the same models on PyTorch. The tests check them against PyTorch. The
# default student's int8 twin (model.int8.onnx + int8.json) is built by the same
# export from the tracked int8_calibration.json, kept only if it agrees with
# model.onnx on this machine. The guard's feature extractor too
# (models/ood_guard/extractor.onnx, kept only if its scores match PyTorch's).
onnx: install
	test -f models/student_kd/int8.json || $(PY) -m lungct lab export --model student_kd teacher_hybrid_vit
	test -f models/ood_guard/extractor.json || $(PY) -m lungct guard export

app: onnx
	$(VENV)/bin/streamlit run app.py

test: onnx
	$(PY) -m pytest -q -rs

smoke: install
	bash training/smoke_pipeline.sh

bench: install
	$(PY) -m lungct lab bench

# A local Orthanc PACS (Debian: apt-get install orthanc orthanc-dicomweb) on
# 127.0.0.1 with DICOMweb and a demo study; its config and storage go to .pacs/
# (git-ignored). Ctrl-C stops it. Then: python -m lungct pacs studies
pacs: install
	$(PY) -m lungct pacs serve --folder .pacs
