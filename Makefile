# The README's commands: `make demo` and `make test`. Everything else is a helper.
BUILD ?= build
SANITIZE ?= 0
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
ifeq ($(SANITIZE),1)
  BUILD := build-san
  CMAKE_FLAGS := -DLUMEN_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
else
  CMAKE_FLAGS := -DCMAKE_BUILD_TYPE=Release
endif
ASSETS ?= ../shared/assets
LUMEN := $(BUILD)/lumen

.PHONY: all setup build demo test bench crosscheck model clean

all: build

setup:
	@sh scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

MODEL ?= models/lumen-tiny
CALENDAR_PROMPTS = "Thursday plus three days is" "Wednesday plus five days is" "If today is Tuesday, then in six days it will be" "Five months from October is"

demo: build
	@echo "== lumen demo: the model that ships with lumen ($(MODEL)) =="
	@$(LUMEN) info $(MODEL)
	@echo
	@echo "== a generated paragraph (temperature 0.8, seed 1) =="
	@$(LUMEN) generate $(MODEL) -p "Once upon a time" -n 96 -t 0.8 --top-p 0.95 --seed 1
	@echo
	@echo "== held-out calendar prompts (greedy) =="
	@for p in $(CALENDAR_PROMPTS); do $(LUMEN) generate $(MODEL) -p "$$p" -n 1 -t 0; done
	@echo
	@echo "== accuracy on all held-out calendar prompts =="
	@$(LUMEN) mc-eval $(MODEL) data/calendar_eval.json
	@echo
	@echo "== linearity profile (Razzhigaev et al. 2024) over this repository's README =="
	@$(LUMEN) linearity $(MODEL) README.md --ctx 128 --svg $(BUILD)/linearity.svg

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

bench: build
	@sh bench/run.sh

model: build
	@sh tools/make_model.sh

crosscheck:
	@sh tools/crosscheck.sh

clean:
	rm -rf build build-san
