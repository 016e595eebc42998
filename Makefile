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

demo: build
	@echo "== lumen demo: greedy story from stories260K =="
	@$(LUMEN) generate $(ASSETS)/models/stories260K/stories260K.bin --tokenizer $(ASSETS)/models/stories260K/tok512.bin -p "" -n 256 -t 0

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
