# vectur — build, test, format. See README.md for the two commands that
# matter: `make demo` and `make test`.

PREFIX ?= /usr/local
DESTDIR ?=
MANDIR ?= $(PREFIX)/share/man
PYTHON ?= /usr/bin/python3
PKGS := fuse3 libcurl json-c sqlite3 libcrypto

# SAN=1 builds everything with ASan+UBSan into build-san/ and bin-san/.
ifeq ($(SAN),1)
BUILD := build-san
BIN := bin-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT := -O1
else
BUILD := build
BIN := bin
SANFLAGS :=
OPT := -O2
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS ?= $(OPT) -g
CFLAGS += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -D_GNU_SOURCE \
	-DFUSE_USE_VERSION=35 -DVECTUR_VERSION='"$(VERSION)"' \
	-Idrive -Icache -Ifs -Ischeduler $(PKG_CFLAGS) $(SANFLAGS) -MMD -MP
LDFLAGS += $(SANFLAGS)
LDLIBS += $(PKG_LIBS) -lpthread -lm
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo 0.1)

DRIVE_SRC := $(wildcard drive/*.c)
CACHE_SRC := $(wildcard cache/*.c)
FS_SRC := $(wildcard fs/*.c)
SCHED_SRC := $(wildcard scheduler/*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
TOOL_SRC := $(wildcard tests/tools/*.c)
# Hand-written roff; tests/integration/test_man_pages.py keeps them in step
# with each program's --help.
MANPAGES := $(wildcard man/*.1)

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))
# One archive per folder: `ar` keys members by file name, so drive/upload.o
# and a cache/upload.o in one archive would silently replace each other.
DRIVE_OBJ := $(call obj,$(DRIVE_SRC))
CACHE_OBJ := $(call obj,$(CACHE_SRC))
LIB_OBJ := $(DRIVE_OBJ) $(CACHE_OBJ)
LIBS := $(BUILD)/libcache.a $(BUILD)/libdrive.a
FS_OBJ := $(call obj,$(FS_SRC))
SCHED_OBJ := $(call obj,$(SCHED_SRC))
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
# Small programs the integration tests and benchmarks drive (e.g. drivectl).
TOOL_BIN := $(patsubst tests/tools/%.c,$(BIN)/tools/%,$(TOOL_SRC))

PROGS := $(if $(FS_SRC),$(BIN)/vectur-mount) $(if $(SCHED_SRC),$(BIN)/vectur-sched)

.PHONY: all deps test unit integration sanitize fmt fmt-check demo bench soak clean install
all: $(PROGS) $(UNIT_BIN) $(TOOL_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libdrive.a: $(DRIVE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/libcache.a: $(CACHE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && $(AR) rcs $@ $^

$(BIN)/vectur-mount: $(FS_OBJ) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/vectur-sched: $(SCHED_OBJ) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/tools/%: $(BUILD)/tests/tools/%.o $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Installs the Debian packages the build and the tests need, if missing.
deps:
	@sh tests/deps.sh

unit: all
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

# The integration tests mostly wait (on mounts, emulators, timeouts), so they
# run in PYTEST_JOBS processes (pytest-xdist; 0 = one after another). Tests
# that need one machine-wide resource share an xdist_group.
PYTEST_JOBS ?= 4
XDIST = $(shell $(PYTHON) -c 'import xdist' 2>/dev/null && \
	  printf -- '-n %s --dist loadgroup' $(PYTEST_JOBS))

integration: all
	VECTUR_BIN=$(CURDIR)/$(BIN) $(PYTHON) -m pytest -q $(XDIST) --durations=15 \
	  -p no:cacheprovider tests

test: deps
	$(MAKE) unit
	$(MAKE) integration

sanitize: deps
	$(MAKE) SAN=1 unit
	$(MAKE) SAN=1 integration

fmt:
	clang-format -i $(wildcard drive/*.[ch] cache/*.[ch] fs/*.[ch] scheduler/*.[ch] tests/unit/*.[ch])

fmt-check:
	clang-format --dry-run -Werror $(wildcard drive/*.[ch] cache/*.[ch] fs/*.[ch] scheduler/*.[ch] tests/unit/*.[ch])

bench: deps all
	bash bench/run.sh

# Long torture runs, reported in the README (not part of make test).
soak: deps all
	@set -e; for s in tests/soak/*.py; do [ -f "$$s" ] || continue; \
	  echo "== $$s"; VECTUR_BIN=$(CURDIR)/$(BIN) $(PYTHON) $$s; done
	VECTUR_LOCK_SOAK=faults VECTUR_BIN=$(CURDIR)/$(BIN) $(PYTHON) -m pytest -q \
	  -p no:cacheprovider tests/integration/test_locks.py -k soak
	VECTUR_SCHED_SOAK=1 VECTUR_BIN=$(CURDIR)/$(BIN) $(PYTHON) -m pytest -q -s -rxX \
	  -p no:cacheprovider tests/integration/test_sched_mounts.py -k soak
	VECTUR_MOUNT_REPRO=1 VECTUR_BIN=$(CURDIR)/$(BIN) $(PYTHON) -m pytest -q -s -rxX \
	  -p no:cacheprovider tests/integration/test_sched_mounts.py -k replaced
	VECTUR_CRASHPOINTS_ALL=1 VECTUR_BIN=$(CURDIR)/$(BIN) $(PYTHON) -m pytest -q -s \
	  -p no:cacheprovider tests/integration/test_mount_crashpoints.py

demo: deps all
	@if [ -x demo/run.sh ]; then bash demo/run.sh; else \
	  echo "make demo: not yet — the mount and scheduler it demonstrates are still being built (see README)."; fi

# Binaries, the helper scripts (vectur-setup on PATH; units, fstab example and
# on-start script under share/vectur), the man pages and the docs.
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/vectur \
	  $(DESTDIR)$(PREFIX)/share/doc/vectur $(DESTDIR)$(MANDIR)/man1
	install -m 0755 $(PROGS) mount-helpers/vectur-setup $(DESTDIR)$(PREFIX)/bin/
	install -m 0755 mount-helpers/vast-onstart.sh $(DESTDIR)$(PREFIX)/share/vectur/
	install -m 0644 mount-helpers/fstab.example mount-helpers/vectur-mount@.service \
	  mount-helpers/vectur-sched.service $(DESTDIR)$(PREFIX)/share/vectur/
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/vectur/
	install -m 0644 fs/README.md $(DESTDIR)$(PREFIX)/share/doc/vectur/MOUNT.md
	install -m 0644 scheduler/README.md $(DESTDIR)$(PREFIX)/share/doc/vectur/SCHEDULER.md
	install -m 0644 mount-helpers/README.md $(DESTDIR)$(PREFIX)/share/doc/vectur/MOUNT-HELPERS.md
	install -m 0644 $(MANPAGES) $(DESTDIR)$(MANDIR)/man1/

clean:
	rm -rf build build-san bin bin-san

# Unit tests compile fs/ and scheduler/ sources in (#include "../../fs/opts.c"):
# their .d files make a change there rebuild the test.
-include $(LIB_OBJ:.o=.d) $(FS_OBJ:.o=.d) $(SCHED_OBJ:.o=.d) \
  $(patsubst %.c,$(BUILD)/%.d,$(UNIT_SRC) $(TOOL_SRC))
