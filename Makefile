# pat: build, generate, test. `make help` lists the targets.
CUDA_HOME ?= /usr/local/cuda
CC        ?= cc
V         ?= 0
Q          = $(if $(filter 1,$(V)),,@)

WARN      = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
            -Wformat=2 -Wundef -Wno-unused-parameter
INCLUDES  = -iquote gen -iquote runtime -iquote build -iquote tests -iquote bench -isystem /usr/include/lua5.4 -isystem $(CUDA_HOME)/include
CFLAGS   ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC -fvisibility=hidden $(WARN) $(INCLUDES) $(CFLAGS)
SAN        = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

# Lua and libyaml are linked statically into executables so they run where the libraries are
# absent; xxhash is used header-only. Debian's liblua5.4.a is not position-independent, so
# libpat.so links Lua's shared library and carries a copy of it beside itself ($ORIGIN).
STATIC_LIBS = -l:liblua5.4.a -l:libyaml.a
SO_LIBS     = -l:libyaml.a -llua5.4 -Wl,-rpath,'$$ORIGIN'
LUA_SO      = $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/liblua5.4.so.0 /usr/lib/*/liblua5.4.so.0))
CUDA_LIBS   = -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lnvrtc
SYS_LIBS    = -lpthread -ldl -lm

CLI_SRC  = $(wildcard gen/patgen*.c)
GEN_SRC  = $(filter-out $(CLI_SRC) gen/embed_tool.c,$(wildcard gen/*.c))
RT_SRC   = $(wildcard runtime/*.c)
LIB_SRC  = $(GEN_SRC) $(RT_SRC) build/embedded.c
TEST_SRC = $(wildcard tests/*.c)
EMBEDDED = $(sort $(wildcard templates/*.lua) $(wildcard templates/device/*.cuh) $(wildcard templates/device/*.h))
SPECS    = $(sort $(filter-out $(wildcard specs/*.tune*.yaml),$(wildcard specs/*.yaml)))  # tuning tables are not specs

OBJ      = $(patsubst %.c,build/obj/%.o,$(LIB_SRC))
HARNESS  = bench/harness.c bench/harness_copy.c
CLI_OBJ  = $(patsubst %.c,build/obj/%.o,$(CLI_SRC) $(HARNESS))
SAN_OBJ  = $(patsubst %.c,build/san/%.o,$(LIB_SRC) $(TEST_SRC) $(HARNESS))

.PHONY: test-only gpu-bundle all generate check-generated compile-report sass-check test test-cpu test-gpu goldens deps clean help run fuzz examples
# The C example links the CUDA runtime (libcudart_static), which a toolkit with only NVRTC
# lacks: it is built where that is found.
EXAMPLES = $(if $(wildcard $(CUDA_HOME)/lib64/libcudart_static.a),build/examples/decode_step)
all: bin/patgen bin/patbench bin/pattune build/libpat.a build/libpat.so $(EXAMPLES)
examples: $(EXAMPLES)
	@[ -n "$(EXAMPLES)" ] || echo "examples: skipped: no $(CUDA_HOME)/lib64/libcudart_static.a"

help:
	@echo "make deps            install the Debian packages pat needs (apt-get)"
	@echo "make all             build bin/patgen, build/libpat.a, build/libpat.so, the C example"
	@echo "make run             generate + compile the default spec, run a default decode workload"
	@echo "make generate        regenerate generated/ from specs/"
	@echo "make check-generated fail if generated/ differs from a fresh generation"
	@echo "make test            all tests, C and Python (GPU tests skip without a GPU driver)"
	@echo "make gpu-bundle      build/gpu: tests and tools for a GPU machine (tests/gpu_run.sh)"
	@echo "make goldens         rewrite tests/golden/ from the current templates"
	@echo "make sass-check      the wgmma kernels' softmax beside P V in SASS (needs cuobjdump)"
	@echo "make fuzz            libFuzzer over specs, tuning tables, trees, batches (needs clang)"

deps:
	@missing=""; for p in liblua5.4-dev libyaml-dev libcriterion-dev libxxhash-dev python3-pytest python3-numpy; do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "deps: all present"; fi
	@test -x $(CUDA_HOME)/bin/nvcc -o -f $(CUDA_HOME)/include/nvrtc.h || \
	  { echo "deps: no CUDA toolkit at CUDA_HOME=$(CUDA_HOME)"; exit 1; }

build/embed_tool: gen/embed_tool.c
	@mkdir -p $(@D)
	$(Q)$(CC) -std=c11 -O1 $(WARN) -o $@ $<

build/embedded.c: build/embed_tool $(EMBEDDED) Makefile
	$(Q)build/embed_tool $(EMBEDDED) > $@.tmp && mv $@.tmp $@

build/obj/%.o: %.c | build/embedded.c
	@mkdir -p $(@D)
	@echo "  CC      $<"
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

build/san/%.o: %.c | build/embedded.c
	@mkdir -p $(@D)
	@echo "  CC san  $<"
	$(Q)$(CC) $(ALL_CFLAGS) $(SAN) -MMD -MP -c -o $@ $<

build/libpat.a: $(OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^

build/libpat.so: $(OBJ)
	$(Q)$(CC) -shared -o $@ $^ $(SO_LIBS) $(CUDA_LIBS) $(SYS_LIBS)
	$(Q)cp -L $(LUA_SO) build/

bin/patbench: build/obj/bench/patbench.o build/obj/bench/harness.o build/obj/bench/harness_copy.o build/libpat.a
	@mkdir -p $(@D)
	$(Q)$(CC) -o $@ $^ $(STATIC_LIBS) $(CUDA_LIBS) $(SYS_LIBS)

bin/pattune: build/obj/bench/tune.o build/obj/bench/harness.o build/obj/bench/harness_copy.o build/libpat.a
	@mkdir -p $(@D)
	$(Q)$(CC) -o $@ $^ $(STATIC_LIBS) $(CUDA_LIBS) $(SYS_LIBS) -lm

# The C example: pat.h and the CUDA runtime only, as an engine would link it.
build/examples/decode_step: examples/decode_step.c runtime/pat.h build/libpat.a
	@mkdir -p $(@D)
	$(Q)$(CC) -std=c11 $(WARN) $(CFLAGS) -iquote runtime -isystem $(CUDA_HOME)/include -o $@ $< build/libpat.a \
	  $(STATIC_LIBS) $(CUDA_LIBS) -lcudart_static -lrt $(SYS_LIBS)

bin/patgen: $(CLI_OBJ) build/libpat.a
	@mkdir -p $(@D)
	$(Q)$(CC) -o $@ $^ $(STATIC_LIBS) $(CUDA_LIBS) $(SYS_LIBS)

build/tests: $(SAN_OBJ)
	$(Q)$(CC) $(SAN) -o $@ $^ \
	  $(STATIC_LIBS) $(CUDA_LIBS) -lcriterion $(SYS_LIBS)

# The test binary also drives bin/patgen (CLI tests), so both are built first. GPU tests in
# it skip, saying why, where there is no CUDA driver.
test:
	@$(MAKE) -s deps
	@$(MAKE) test-only

# Debian's python3 (python3-pytest, python3-numpy: the binding's numpy path) runs the
# binding's tests; the PyTorch ones skip without PyTorch (CI installs Debian's), the GPU
# ones without a GPU.
PYTEST_PY ?= /usr/bin/python3
test-only: bin/patgen build/tests build/libpat.so check-generated compile-report sass-check
	ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=tests/lsan.supp UBSAN_OPTIONS=print_stacktrace=1 build/tests $(TEST_ARGS)
	$(PYTEST_PY) -m pytest python/tests -q -rs -p no:cacheprovider

# NVRTC-compiles every kernel of every spec for its archs (no GPU needed): registers, spills
# and shared memory per kernel; fails on a compile error or a spill.
# The cubins go to build/cubins/SPEC/ (sass-check reads them).
compile-report: bin/patgen
	$(Q)for s in $(SPECS); do d=build/cubins/$$(basename $$s .yaml); rm -rf $$d && mkdir -p $$d && \
	  bin/patgen compile $$s --cubin-dir $$d || exit 1; done

# The wgmma kernels' SASS: the softmax runs beside P V (bench/sass_overlap.sh), on the cubins
# compile-report wrote. It needs cuobjdump; without one it is skipped, saying so.
CUOBJDUMP ?= $(shell command -v cuobjdump || ls $(CUDA_HOME)/bin/cuobjdump 2>/dev/null)
sass-check: compile-report
	$(Q)if [ -n "$(CUOBJDUMP)" ]; then CUOBJDUMP=$(CUOBJDUMP) bench/sass_overlap.sh build/cubins/*/*.sm_90a.cubin; \
	else echo "sass-check: skipped: no cuobjdump (CUOBJDUMP=...; bench/sass_overlap.sh says where to get one)"; fi

# A bundle for a GPU machine that has no Criterion, Lua or libyaml: unsanitised test binary
# (ASan and the CUDA driver do not mix), patgen, the benchmark and the shared libraries the
# machine may lack, all under build/gpu/. tests/gpu_run.sh runs it there.
GPU_SKIP_LIBS = linux-vdso ld-linux libc.so libm.so libdl libpthread librt libz.so libcrypto \
                libresolv libkrb5 libgssapi libk5crypto libcom_err libkeyutils libpcre2 libffi \
                libnvrtc libstdc libgcc
TEST_OBJ = $(patsubst %.c,build/obj/%.o,$(TEST_SRC) $(HARNESS))
gpu-bundle: bin/patgen build/libpat.so $(EXAMPLES) $(TEST_OBJ) $(OBJ) $(wildcard bench/*.c)
	@mkdir -p build/gpu/lib
	$(Q)$(CC) -o build/gpu/tests $(TEST_OBJ) $(OBJ) $(STATIC_LIBS) $(CUDA_LIBS) -lcriterion $(SYS_LIBS)
	$(Q)cp bin/patgen build/libpat.so $(EXAMPLES) $(LUA_SO) build/gpu/
	$(Q)$(MAKE) -s bin/patbench bin/pattune && cp bin/patbench bin/pattune build/gpu/
	$(Q)ldd build/gpu/tests | awk '/=>/ {print $$3}' | grep -v -E '$(shell echo $(GPU_SKIP_LIBS) | tr ' ' '|')' | \
	  xargs -r -I{} cp -L {} build/gpu/lib/
	@# The source the bundle was built from: a carried bundle says which code it runs.
	$(Q)(git describe --always --dirty 2>/dev/null || echo unknown) > build/gpu/SOURCE
	@echo "gpu-bundle: build/gpu ($$(du -sh build/gpu | cut -f1)); run tests/gpu_run.sh on the GPU machine"

generate: bin/patgen
	$(Q)for s in $(SPECS); do n=$$(basename $$s .yaml); \
	  bin/patgen $$s -o generated/$$n || exit 1; done

check-generated: bin/patgen
	$(Q)rm -rf build/regen && mkdir -p build/regen && for s in $(SPECS); do \
	  n=$$(basename $$s .yaml); bin/patgen $$s -o build/regen/$$n >/dev/null || exit 1; done
	$(Q)diff -r generated build/regen >/dev/null || { echo "generated/ is stale: run 'make generate'"; \
	  diff -r generated build/regen | head -40; exit 1; }
	@echo "check-generated: generated/ matches specs/ and templates/"

goldens: bin/patgen
	$(Q)rm -rf tests/golden && bin/patgen tests/golden.yaml -o tests/golden

# The default job: generate and NVRTC-compile the default spec's kernels, then run a decode
# workload on the GPU (prefix-aware and direct, checked and timed); without a GPU it says so.
run:
	@$(MAKE) -s deps
	@$(MAKE) -s bin/patgen build/libpat.so
	bin/patgen specs/default.yaml -o build/default
	bin/patgen compile specs/default.yaml
	bin/patgen run specs/default.yaml

# libFuzzer over every reader of user input (tests/fuzz/fuzz_inputs.c) with ASan and UBSan,
# seeded with the specs, the bad specs, the tuning tables and the paper's trees (from
# runtime/tree.c). Not part of `make test` (it needs clang and takes FUZZ_SECONDS); a finding
# is written to build/fuzz/.
FUZZ_SECONDS ?= 120
FUZZ_SRC = gen/spec.c gen/yaml_doc.c gen/tuning_read.c gen/tuning.c gen/tile.c $(wildcard runtime/sched*.c) \
           runtime/tree.c tests/fuzz/fuzz_inputs.c
fuzz: $(FUZZ_SRC)
	@command -v clang >/dev/null || { echo "fuzz: needs clang (with libFuzzer)"; exit 1; }
	@mkdir -p build/fuzz/corpus
	$(Q)clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  -iquote gen -iquote runtime $(FUZZ_SRC) -lyaml -o build/fuzz/fuzz_inputs
	@i=0; for f in specs/*.yaml tests/bad_specs/*.yaml; do i=$$((i + 1)); \
	  case $$f in *.tune*) b='\001';; *) b='\000';; esac; { printf "$$b"; cat $$f; } > build/fuzz/corpus/file$$i; done; \
	for t in $$(grep -o '"[0-9,]*_[0-9,]*"' runtime/tree.c | tr -d '"') 1,8_512,100 2_10000 1,3_30,16; do \
	  i=$$((i + 1)); { printf '\002'; printf '%s' "$$t"; } > build/fuzz/corpus/tree$$i; done
	cd build/fuzz && ./fuzz_inputs -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -rss_limit_mb=4096 corpus

clean:
	rm -rf build bin

-include $(shell find build -name '*.d' 2>/dev/null)
