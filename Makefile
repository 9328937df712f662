# The two commands users need: `make demo` and `make test`. Everything else is optional.
VENV      ?= .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.speechllm-installed
PYTEST_ARGS ?=

.PHONY: demo test setup packs lint bench clean

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

# Offline model packs used by tests and the demo (assembled once into $$SPEECHLLM_HOME).
packs: $(STAMP)
	$(BIN)/speechllm models pull smollm2-135m whisper-tiny.en

demo: packs
	bash scripts/demo.sh

# pytest exits 5 when it collected no tests: that is a failure here, with a message (make itself
# would turn any non-zero code into 2, so the check lives in the recipe).
test: packs
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing" >&2; fi; \
	exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check speechllm data_prep evaluation tests benchmarks

bench: packs
	$(BIN)/python benchmarks/step_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache
