# Two commands set everything up on a fresh machine:
#   make train   environment + built-in generated data + 2-process DCNv2 training via torchx
#   make test    environment + the whole test suite (what CI runs: .ci/run)
VENV ?= .venv
VARIANT ?= cpu
ROWS ?= 400000
DATA ?= data/generated
NPROC ?= 2
RECIPE ?= default
export PATH := $(abspath $(VENV))/bin:$(PATH)

STAMP := $(VENV)/.installed-$(VARIANT)

.PHONY: env data train test smoke clean-data

env: $(STAMP)

$(STAMP): requirements/$(VARIANT).txt requirements/torchrec.txt pyproject.toml launch/install_env.sh
	VENV=$(VENV) bash launch/install_env.sh $(VARIANT)

$(DATA)/parquet/metadata.json: | $(STAMP)
	torchrec-app generate --rows $(ROWS) --out $(DATA)/raw
	torchrec-app preprocess --train $(DATA)/raw/train.txt --valid $(DATA)/raw/valid.txt \
	    --test $(DATA)/raw/test.txt --out $(DATA)/parquet

data: $(DATA)/parquet/metadata.json

train: data
	torchx run -s local_cwd launch/components.py:train --nproc $(NPROC) --recipe $(RECIPE) --data $(DATA)/parquet

smoke: env
	torchx run -s local_cwd launch/components.py:smoke --nproc $(NPROC)

test: env
	python -m pytest

clean-data:
	rm -rf $(DATA)
