# Build and install zsnap in the usual places:
#   make                                   # cargo build --release --locked
#   make install PREFIX=/usr/local         # as root; DESTDIR=/tmp/stage for packaging
#   make uninstall PREFIX=/usr/local       # removes exactly what install put there
#   make deb                               # target/zsnap_VERSION_ARCH.deb, for dpkg -i
# install and deb do not build (so `sudo make install` never runs cargo as root or needs the
# network): they copy BUILT's binaries (default target/release; BUILT=target/debug for a
# debug build) and fail with one line when they are missing.

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
# Where bash-completion, zsh and fish look (under /usr/local too, through XDG_DATA_DIRS and
# zsh's site-functions). The scripts are generated at install time from BUILT's binaries
# (`BIN --completions SHELL`, `zsnap-plan --completions SHELL SCRIPT`): nothing to commit,
# and they cannot drift from the flag tables they come from.
bashcompdir = $(PREFIX)/share/bash-completion/completions
zshcompdir = $(PREFIX)/share/zsh/site-functions
fishcompdir = $(PREFIX)/share/fish/vendor_completions.d

BINS = s3put s3get zsnap-plan zsnap-health zsync-ssh
SCRIPTS = zsnap-backup zsnap-restore zsnap-prune zsnap-status zsnap-snapshot
MANS = $(BINS:%=%.1) $(SCRIPTS:%=%.1)
UNITS = zsnap-snapshot@.service zsnap-snapshot@.timer zsnap-backup.service zsnap-backup.timer \
	zsnap-prune.service zsnap-prune.timer zsnap-health.service zsnap-health.timer
# Copied as they are, and with @BINDIR@ replaced by where the scripts are installed.
DOCS = zsnap.conf.example
BINDIR_DOCS = zsnap.cron.example

# The package is `make install PREFIX=/usr` into a staging root, plus what Debian adds: man
# pages gzipped, the example config as the conffile /etc/zsnap/zsnap.conf, a copyright file,
# md5sums, and a control file (dist/deb/control) whose shared-library Depends come from
# dpkg-shlibdeps. Built with dpkg-deb alone; DEB names the output, DEBWORK the staging
# directory (its debian/ is replaced), DEB_COMPRESS dpkg-deb's -Z. Directories are made 755
# whatever the umask; dpkg-deb --root-owner-group makes every file root's without fakeroot.
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
DEB_ARCH = $(shell dpkg --print-architecture)
DEB ?= target/zsnap_$(VERSION)_$(DEB_ARCH).deb
DEBWORK ?= target/deb
DEB_COMPRESS ?= xz
# dpkg-shlibdeps wants the files in debian/PACKAGE beside a debian/control.
debroot = $(DEBWORK)/debian/zsnap

.PHONY: all install uninstall deb deb-path

all:
	cargo build --release --locked

install:
	@for b in $(BINS); do \
		test -x "$(BUILT)/$$b" || { echo "make install: $(BUILT)/$$b is missing: run make first (or give BUILT=DIR)" >&2; exit 1; }; \
	done
	install -d "$(DESTDIR)$(bindir)" "$(DESTDIR)$(libdir)" "$(DESTDIR)$(mandir)" "$(DESTDIR)$(docdir)" "$(DESTDIR)$(unitdir)"
	install -d "$(DESTDIR)$(bashcompdir)" "$(DESTDIR)$(zshcompdir)" "$(DESTDIR)$(fishcompdir)"
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
	for n in $(BINS) $(SCRIPTS); do \
		case " $(SCRIPTS) " in *" $$n "*) gen="$(BUILT)/zsnap-plan --completions" arg=$$n ;; *) gen="$(BUILT)/$$n --completions" arg= ;; esac; \
		$$gen bash $$arg >"$(DESTDIR)$(bashcompdir)/$$n" && \
		$$gen zsh $$arg >"$(DESTDIR)$(zshcompdir)/_$$n" && \
		$$gen fish $$arg >"$(DESTDIR)$(fishcompdir)/$$n.fish" && \
		chmod 644 "$(DESTDIR)$(bashcompdir)/$$n" "$(DESTDIR)$(zshcompdir)/_$$n" "$(DESTDIR)$(fishcompdir)/$$n.fish" || exit 1; \
	done

uninstall:
	rm -f $(BINS:%="$(DESTDIR)$(bindir)/%") $(SCRIPTS:%="$(DESTDIR)$(bindir)/%")
	rm -f "$(DESTDIR)$(libdir)/zsnap-common.sh" $(MANS:%="$(DESTDIR)$(mandir)/%")
	rm -f $(DOCS:%="$(DESTDIR)$(docdir)/%") $(BINDIR_DOCS:%="$(DESTDIR)$(docdir)/%")
	rm -f $(UNITS:%="$(DESTDIR)$(unitdir)/%")
	rm -f $(BINS:%="$(DESTDIR)$(bashcompdir)/%") $(SCRIPTS:%="$(DESTDIR)$(bashcompdir)/%")
	rm -f $(BINS:%="$(DESTDIR)$(zshcompdir)/_%") $(SCRIPTS:%="$(DESTDIR)$(zshcompdir)/_%")
	rm -f $(BINS:%="$(DESTDIR)$(fishcompdir)/%.fish") $(SCRIPTS:%="$(DESTDIR)$(fishcompdir)/%.fish")
	# Only the directories that are zsnap's own, and only when empty.
	for d in "$(DESTDIR)$(libdir)" "$(DESTDIR)$(docdir)"; do rmdir "$$d" 2>/dev/null || true; done

deb:
	@test -n "$(VERSION)" || { echo "make deb: no version = \"...\" line in Cargo.toml" >&2; exit 1; }
	@for t in dpkg-deb dpkg-shlibdeps; do \
		command -v $$t >/dev/null || { echo "make deb: $$t is missing: apt-get install dpkg-dev" >&2; exit 1; }; \
	done
	rm -rf "$(DEBWORK)/debian"
	$(MAKE) --no-print-directory install PREFIX=/usr DESTDIR="$(debroot)" BUILT="$(BUILT)"
	gzip -9n "$(debroot)/usr/share/man/man1/"*.1
	install -d -m 755 "$(debroot)/DEBIAN" "$(debroot)/etc/zsnap"
	install -m 644 dist/zsnap.conf.example "$(debroot)/etc/zsnap/zsnap.conf"
	install -m 644 dist/deb/copyright "$(debroot)/usr/share/doc/zsnap/copyright"
	install -m 644 dist/deb/conffiles "$(debroot)/DEBIAN/conffiles"
	cd "$(debroot)" && find usr -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum >DEBIAN/md5sums
	printf 'Source: zsnap\n\nPackage: zsnap\nArchitecture: any\n' >"$(DEBWORK)/debian/control"
	shlibs=$$(cd "$(DEBWORK)" && dpkg-shlibdeps -O $(BINS:%=debian/zsnap/usr/bin/%)) && \
	shlibs=$${shlibs#shlibs:Depends=} && test -n "$$shlibs" && \
	size=$$(du -sk --apparent-size --exclude=DEBIAN "$(debroot)" | cut -f 1) && \
	sed -e 's|@VERSION@|$(VERSION)|' -e 's|@ARCH@|$(DEB_ARCH)|' -e "s|@INSTALLED_SIZE@|$$size|" \
		-e "s|@SHLIBS_DEPENDS@|$$shlibs|" dist/deb/control >"$(debroot)/DEBIAN/control"
	find "$(debroot)" -type d -exec chmod 755 {} +
	dpkg-deb --root-owner-group -Z$(DEB_COMPRESS) --build "$(debroot)" "$(DEB)"

# Where `make deb` writes the package (for .ci/run).
deb-path:
	@echo "$(DEB)"
