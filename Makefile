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

# The SAE of the demo: deterministic for a given thread count, so the feature ids below are the
# same on every run (a different BLAS kernel may change the last bits and with them the ids).
SAE_DIR = $(BUILD)/demo-sae
SAE_HOOK = blocks.1.hook_resid_post
SAE_TRAIN = --d-sae 768 --arch topk --k 16 --lr 1e-3 --tokens 400000 --batch 1024 --seed 1 --threads 2 --quiet
SAE_SHOW = 523,726,648
SAE_STEER = 523

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
	@echo
	@echo "== the most linear block removed, then replaced by a least-squares linear map (held-out perplexity) =="
	@$(LUMEN) prune $(MODEL) --remove 1 --calib data/calendar_train.txt --eval data/calendar_heldout.txt --ctx 128 -o $(BUILD)/demo-removed >$(BUILD)/demo-removed.txt 2>&1 || { cat $(BUILD)/demo-removed.txt; exit 1; }; grep -E '^(removed|linearized|perplexity)' $(BUILD)/demo-removed.txt
	@$(LUMEN) prune $(MODEL) --linearize 1 --calib data/calendar_train.txt --eval data/calendar_heldout.txt --ctx 128 -o $(BUILD)/demo-linearized >$(BUILD)/demo-linearized.txt 2>&1 || { cat $(BUILD)/demo-linearized.txt; exit 1; }; grep -E '^(removed|linearized|perplexity)' $(BUILD)/demo-linearized.txt
	@echo
	@echo "== sparse autoencoder (Templeton et al. 2024) at $(SAE_HOOK), trained on data/calendar_train.txt =="
	@rm -rf $(SAE_DIR)
	@$(LUMEN) sae train $(MODEL) data/calendar_train.txt --hook $(SAE_HOOK) $(SAE_TRAIN) -o $(SAE_DIR)
	@echo
	@echo "== the SAE spliced into the model on the held-out calendar sentences =="
	@$(LUMEN) sae eval $(MODEL) $(SAE_DIR) data/calendar_heldout.txt --batch 8 --threads 2
	@echo
	@echo "== features $(SAE_SHOW) (top contexts, activating token in [[ ]]) =="
	@$(LUMEN) sae features $(MODEL) $(SAE_DIR) data/calendar_train.txt --threads 2 --quiet --show $(SAE_SHOW)
	@echo
	@echo "== steering: feature $(SAE_STEER) (fires where October comes next in a list of months) clamped to 2x its max activation =="
	@$(LUMEN) steer $(MODEL) $(SAE_DIR) -p "Once upon a time" --feature $(SAE_STEER) --clamp 2 -n 24 --threads 2

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
