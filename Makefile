# The two commands of the README:
#   make demo   runs the main job on embedded defaults (no API keys, no servers): the prompt
#               canonicalization demo, then the end-to-end benchmark with its HTML report
#   make test   runs the whole test suite: ruff, mypy (strict on src/tokenlean and on both
#               adapters), the docs site build (mkdocs --strict) and pytest
# Both create or update .venv first (scripts/bootstrap.sh), idempotently.

VENV ?= .venv
BIN := $(VENV)/bin
# The bundled embedding model is read from site-packages; never reach for a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export NO_MKDOCS_2_WARNING := 1
export TOKENLEAN_REDIS_URL ?= redis://127.0.0.1:6379/0

# The LlamaIndex adapter's namespace packages (llama_index.<kind>.tokenlean), type-checked strictly.
LLAMAINDEX_PACKAGES := llms.tokenlean memory.tokenlean callbacks.tokenlean retrievers.tokenlean \
	postprocessor.tokenlean query_engine.tokenlean

.PHONY: demo test setup lint typecheck pytest bench

setup:
	@TOKENLEAN_VENV=$(VENV) ./scripts/bootstrap.sh

demo: setup
	@$(BIN)/tokenlean demo
	@$(BIN)/tokenlean bench --reports reports

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --strict integrations/langchain/langchain_tokenlean
	cd integrations/llamaindex && $(abspath $(BIN))/mypy --strict --explicit-package-bases \
		$(addprefix -p llama_index.,$(LLAMAINDEX_PACKAGES))
	$(BIN)/mkdocs build --strict --quiet
	$(BIN)/python scripts/with_redis.py $(BIN)/pytest

bench: setup
	@$(BIN)/tokenlean bench tokens
