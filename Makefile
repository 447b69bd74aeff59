# Build and install zsnap in the usual places:
#   make                                   # cargo build --release --locked
#   make install PREFIX=/usr/local         # as root; DESTDIR=/tmp/stage for packaging
#   make uninstall PREFIX=/usr/local       # removes exactly what install put there
# install does not build (so `sudo make install` never runs cargo as root or needs the
# network): it copies BUILT's binaries (default target/release; BUILT=target/debug for a
# debug build) and fails with one line when they are missing.

PREFIX ?= /usr/local
DESTDIR ?=
BUILT ?= target/release

bindir = $(PREFIX)/bin
# zsnap-common.sh, sourced by the scripts, which look for it in ../lib/zsnap beside bin/.
libdir = $(PREFIX)/lib/zsnap
mandir = $(PREFIX)/share/man/man1
docdir = $(PREFIX)/share/doc/zsnap
# systemd reads /usr/local/lib/systemd/system and /usr/lib/systemd/system.
unitdir = $(PREFIX)/lib/systemd/system

BINS = s3put s3get zsnap-plan zsnap-health zsync-ssh
SCRIPTS = zsnap-backup zsnap-restore zsnap-prune zsnap-status zsnap-snapshot
MANS = $(BINS:%=%.1) $(SCRIPTS:%=%.1)
UNITS = zsnap-snapshot@.service zsnap-snapshot@.timer zsnap-backup.service zsnap-backup.timer \
	zsnap-prune.service zsnap-prune.timer zsnap-health.service zsnap-health.timer
# Copied as they are, and with @BINDIR@ replaced by where the scripts are installed.
DOCS = zsnap.conf.example
BINDIR_DOCS = zsnap.cron.example

.PHONY: all install uninstall

all:
	cargo build --release --locked

install:
	@for b in $(BINS); do \
		test -x "$(BUILT)/$$b" || { echo "make install: $(BUILT)/$$b is missing: run make first (or give BUILT=DIR)" >&2; exit 1; }; \
	done
	install -d "$(DESTDIR)$(bindir)" "$(DESTDIR)$(libdir)" "$(DESTDIR)$(mandir)" "$(DESTDIR)$(docdir)" "$(DESTDIR)$(unitdir)"
	install -m 755 $(BINS:%=$(BUILT)/%) "$(DESTDIR)$(bindir)/"
	install -m 755 $(SCRIPTS:%=scripts/%) "$(DESTDIR)$(bindir)/"
	install -m 644 scripts/zsnap-common.sh "$(DESTDIR)$(libdir)/"
	install -m 644 $(MANS:%=man/%) "$(DESTDIR)$(mandir)/"
	install -m 644 $(DOCS:%=dist/%) "$(DESTDIR)$(docdir)/"
	for f in $(BINDIR_DOCS); do \
		sed 's|@BINDIR@|$(bindir)|g' "dist/$$f" >"$(DESTDIR)$(docdir)/$$f" && chmod 644 "$(DESTDIR)$(docdir)/$$f" || exit 1; \
	done
	for u in $(UNITS); do \
		sed 's|@BINDIR@|$(bindir)|g' "dist/systemd/$$u" >"$(DESTDIR)$(unitdir)/$$u" && chmod 644 "$(DESTDIR)$(unitdir)/$$u" || exit 1; \
	done

uninstall:
	rm -f $(BINS:%="$(DESTDIR)$(bindir)/%") $(SCRIPTS:%="$(DESTDIR)$(bindir)/%")
	rm -f "$(DESTDIR)$(libdir)/zsnap-common.sh" $(MANS:%="$(DESTDIR)$(mandir)/%")
	rm -f $(DOCS:%="$(DESTDIR)$(docdir)/%") $(BINDIR_DOCS:%="$(DESTDIR)$(docdir)/%")
	rm -f $(UNITS:%="$(DESTDIR)$(unitdir)/%")
	# Only the directories that are zsnap's own, and only when empty.
	for d in "$(DESTDIR)$(libdir)" "$(DESTDIR)$(docdir)"; do rmdir "$$d" 2>/dev/null || true; done
