# dcgate build. Plain make: `make`, `make test`, `make run`, `make bench`, `make SANITIZE=1`.
# Sources are found per folder; objects go to build/ (or build-san/ with SANITIZE=1).

CC      ?= cc
# libcurl is not linked: common/curl_lazy.c loads it on first use (only its headers are needed)
PKGS    := libmicrohttpd jansson libuv raft openssl gnutls zlib
HDR_PKGS := $(PKGS) libcurl
SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD   := build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT     := -O1 -g
else
BUILD   := build
SANFLAGS :=
OPT     := -O2 -g
endif

CFLAGS  += -std=gnu11 $(OPT) -Wall -Wextra -Werror -Wno-unused-parameter -Wno-format-truncation -Wshadow -pthread \
           -I. $(shell pkg-config --cflags $(HDR_PKGS)) $(SANFLAGS) -MMD -MP -D_GNU_SOURCE
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -lnng -lm -pthread
LDFLAGS += $(SANFLAGS)

LIB_DIRS := common catalog tls wan federation lan http
LIB_SRCS := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
CMD_SRCS := $(wildcard cmd/*.c)
CMD_OBJS := $(CMD_SRCS:%.c=$(BUILD)/%.o)

UNIT_SRCS := $(wildcard tests/unit/*/*_test.c)
UNIT_BINS := $(UNIT_SRCS:%.c=$(BUILD)/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:%.c=$(BUILD)/%)

.PHONY: all deps test unit fuzz fuzz-replay integration run bench soak format clean

all: deps $(BUILD)/dcgate

deps:
	@bash scripts/install-deps.sh

$(BUILD)/dcgate: $(CMD_OBJS) $(BUILD)/libdcgate.a
	$(CC) $(LDFLAGS) -o $@ $(CMD_OBJS) $(BUILD)/libdcgate.a $(LDLIBS)

$(BUILD)/libdcgate.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/unit/%: tests/unit/%.c $(BUILD)/libdcgate.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(shell pkg-config --cflags cmocka) -o $@ $< $(BUILD)/libdcgate.a $(LDLIBS) $(shell pkg-config --libs cmocka) $(LDFLAGS)

# Fuzz targets build two ways: here with a replay main (tests/fuzz/replay.c) that feeds every
# corpus file once, so `make test` replays the corpora; `make fuzz` builds them for libFuzzer.
$(BUILD)/tests/fuzz/%: tests/fuzz/%.c tests/fuzz/replay.c $(BUILD)/libdcgate.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< tests/fuzz/replay.c $(BUILD)/libdcgate.a $(LDLIBS) $(LDFLAGS)

# The WAN emulator's packet delayer (tests/wan, used by tests needing a slow, lossy WAN): a standalone
# libnetfilter_queue program. Flags are read when it is built, after deps has installed the library.
WAN_DELAYER := $(BUILD)/tests/wan/delayer
all: $(WAN_DELAYER)
$(WAN_DELAYER): tests/wan/delayer.c | deps
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 $(OPT) -Wall -Wextra -Werror -Wshadow -D_GNU_SOURCE $$(pkg-config --cflags libnetfilter_queue) \
	  -o $@ $< $$(pkg-config --libs libnetfilter_queue)

# Real fuzzing with libFuzzer (clang): `make fuzz FUZZ_SECONDS=60` runs each target for that long
# on a copy of its corpus and keeps new inputs in build-fuzz/corpus-<target>.
FUZZ_SECONDS ?= 30
FUZZ_LIB_SRCS := $(wildcard common/*.c catalog/*.c) http/query.c http/decode.c tls/frames.c wan/msg.c lan/gossip_msg.c
fuzz:
	@mkdir -p build-fuzz
	@for src in $(FUZZ_SRCS); do name=$$(basename $$src .c); t=$${name#fuzz_}; \
	  clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -D_GNU_SOURCE \
	    $(shell pkg-config --cflags $(HDR_PKGS)) -o build-fuzz/$$name $$src $(FUZZ_LIB_SRCS) \
	    $(shell pkg-config --libs jansson zlib libcrypto) -lm || exit 1; \
	  mkdir -p build-fuzz/corpus-$$t && cp -n tests/fuzz/corpus/$$t/* build-fuzz/corpus-$$t/; \
	  build-fuzz/$$name -max_total_time=$(FUZZ_SECONDS) -max_len=8192 build-fuzz/corpus-$$t || exit 1; \
	done

unit: all $(UNIT_BINS)
	@bash tests/run-unit.sh $(BUILD) $(UNIT_BINS)

fuzz-replay: all $(FUZZ_BINS)
	@bash tests/fuzz/replay-all.sh $(BUILD)

integration: all
	@DCGATE_BIN=$(CURDIR)/$(BUILD)/dcgate bash tests/run-integration.sh

# The one command: installs what is missing, builds, runs unit tests, fuzz corpora and integration
# tests, then the same unit tests, corpora and a fast integration subset under ASan+UBSan.
test: deps
	@bash tests/run-all.sh

run: all
	./$(BUILD)/dcgate agent -dev

bench: all
	@bash bench/run.sh $(CURDIR)/$(BUILD)/dcgate

soak: all
	@DCGATE_BIN=$(CURDIR)/$(BUILD)/dcgate bash tests/soak.sh

format:
	clang-format -i $(LIB_SRCS) $(CMD_SRCS) $(wildcard */*.h) $(UNIT_SRCS) $(FUZZ_SRCS)

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
