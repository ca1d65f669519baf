#!/usr/bin/env bash
# build.sh — build a standalone x86_64 UEFI GRUB image (BOOTX64.EFI) that carries twinslot's
# gptprio module, from Debian's grub2 source package, and cache it.
#
# Usage: partition/grub/build.sh
#   Prints the absolute path of BOOTX64.EFI as the last line of stdout; progress goes to stderr.
#   TWINSLOT_CACHE overrides the cache root (default $HOME/.cache/twinslot).
#
# The result lives in $cache/grub/<debian source version>-<key>/ where key is a short SHA-256 of
# gptprio.c, this script and the module list, so any change to them builds anew and a run with
# everything cached takes seconds. The result is assembled in a temporary directory renamed
# into place only when complete: a killed build never leaves a half cache. The GRUB tree is
# built in $cache/grub/work/<version>-<configuration hash>/ (restartable: a killed make
# resumes; a tree killed before configure finished is redone), so a change to gptprio.c
# recompiles only the module.
#
# As root it adds a deb-src entry for Debian's archive and installs the build dependencies
# when they are missing; otherwise it says what to run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${TWINSLOT_CACHE:-$HOME/.cache/twinslot}/grub

# Modules linked into the image: GPT + FAT for the ESP, ext2 for /boot-style files, the Linux
# loader, the script engine and the commands our grub.cfg files use, a serial console.
MODULES=(part_gpt fat ext2 linux normal configfile echo test search gptprio serial terminal
	sleep reboot halt ls cat)

# Only what the EFI platform needs: no NLS, no FUSE grub-mount, no themes/fonts, no ZFS.
CONFIGURE_ARGS=(--with-platform=efi --target=x86_64 --disable-werror --disable-nls
	--disable-grub-mount --disable-grub-themes --disable-grub-mkfont --disable-device-mapper
	--disable-libzfs --disable-liblzma --disable-grub-emu-sdl --disable-grub-emu-pci
	--disable-cache-stats --disable-boot-time --disable-mm-debug)

# The minimal Debian build dependencies of the EFI platform build (`apt-get build-dep grub2`
# pulls in far more: fonts, FUSE, ZFS, device-mapper, documentation tools).
BUILD_DEPS=(gcc make binutils bison flex autoconf automake gettext autopoint python3
	pkg-config dpkg-dev)

DEBSRC_FILE=/etc/apt/sources.list.d/twinslot-deb-src.sources

log() { printf 'grub/build.sh: %s\n' "$*" >&2; }

# quiet LOGFILE CMD...: runs CMD with its output in LOGFILE; on failure shows the end of it.
quiet() {
	local logfile=$1
	shift
	if ! "$@" >>"$logfile" 2>&1; then
		tail -n 60 "$logfile" >&2
		cp "$logfile" "$cache_root/failed-build.log" 2>/dev/null || true
		die "'$*' failed; the whole log is in $cache_root/failed-build.log"
	fi
}
die() { log "error: $*"; exit 1; }

# sha256 of one or more files/strings, first 12 hex digits.
short_sha() { sha256sum | cut -c1-12; }

key=$( {
	cat "$here/gptprio.c" "$here/build.sh"
	printf '%s\n' "${MODULES[@]}"
} | short_sha)

# The build tree's configuration: a tree is reused only when this matches.
tree_stamp() { # $1 = debian version
	{ printf '%s\n' "$1" "${CONFIGURE_ARGS[@]}"; makefile_entry; } | short_sha
}

makefile_entry() {
	cat <<'EOF'

module = {
  name = gptprio;
  common = commands/twinslot_gptprio.c;
};
EOF
}

as_root() {
	if [ "$(id -u)" != 0 ]; then
		die "this step needs root: $*  (run it once as root, or build where the cache is already filled)"
	fi
	"$@"
}

# A deb-src stanza for every Debian archive that debian.sources lists with Types: deb.
# (No `| grep -q`: with pipefail, apt-cache's SIGPIPE would fail the pipeline.)
have_source() { [ -n "$(apt-cache showsrc --only-source grub2 2>/dev/null | awk '/^Package: grub2$/')" ]; }

ensure_deb_src() {
	if have_source; then
		return 0
	fi
	local src=/etc/apt/sources.list.d/debian.sources
	[ -r "$src" ] || die "no deb-src for grub2 and no $src to copy from; add a deb-src line for Debian bookworm and run apt-get update"
	log "adding $DEBSRC_FILE (deb-src for the archives in $src) and running apt-get update"
	local tmp
	tmp=$(mktemp)
	# Copy each stanza's URIs/Suites/Components/Signed-By with Types: deb-src.
	awk 'BEGIN { RS=""; FS="\n" }
	{
		out = "Types: deb-src\n"; keep = 0
		for (i = 1; i <= NF; i++) {
			if ($i ~ /^Types:/ && $i ~ /(^|[ \t])deb([ \t]|$)/) keep = 1
			if ($i ~ /^(URIs|Suites|Components|Signed-By):/) out = out $i "\n"
		}
		if (keep) printf "%s\n", out
	}' "$src" >"$tmp"
	[ -s "$tmp" ] || { rm -f "$tmp"; die "found no 'Types: deb' stanza in $src"; }
	as_root install -m 0644 "$tmp" "$DEBSRC_FILE"
	rm -f "$tmp"
	as_root apt-get update -qq >&2
	have_source ||
		die "apt-cache still knows no grub2 source package after adding $DEBSRC_FILE"
}

# The highest grub2 source version apt knows (apt-get source picks the same one).
source_version() {
	local best="" v
	for v in $(apt-cache showsrc --only-source grub2 | awk '/^Version:/ { print $2 }'); do
		if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
	done
	[ -n "$best" ] || die "apt-cache showsrc grub2 lists no version"
	printf '%s\n' "$best"
}

ensure_build_deps() {
	local missing=() p
	for p in "${BUILD_DEPS[@]}"; do
		dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing build dependencies: ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
	fi
}

# Downloads (once) the .dsc and tarballs of grub2=$1 into $cache_root/src/$1.
fetch_source() {
	local ver=$1 dir="$cache_root/src/$1"
	if [ -f "$dir/.complete" ]; then
		return 0
	fi
	log "downloading Debian source grub2=$ver"
	rm -rf "$dir.tmp"
	mkdir -p "$dir.tmp"
	(cd "$dir.tmp" && apt-get source --download-only -qq "grub2=$ver" >&2)
	ls "$dir.tmp"/*.dsc >/dev/null 2>&1 || die "apt-get source grub2=$ver downloaded no .dsc"
	touch "$dir.tmp/.complete"
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
}

# prepare_tree DIR: Debian's source with its patches and our module entry, autogen'd and
# configured in DIR/tree; DIR/.configured marks it done (a half-prepared DIR is redone).
prepare_tree() {
	local dir=$1
	if [ -f "$dir/.configured" ]; then
		return 0
	fi
	rm -rf "$dir"
	mkdir -p "$dir"
	log "unpacking grub2 $ver with Debian's patches into $dir"
	quiet "$dir/build.log" dpkg-source --no-check -x "$cache_root/src/$ver"/grub2_*.dsc "$dir/tree"
	cp "$here/gptprio.c" "$dir/tree/grub-core/commands/twinslot_gptprio.c"
	makefile_entry >>"$dir/tree/grub-core/Makefile.core.def"
	log "autogen"
	(cd "$dir/tree" && quiet "$dir/build.log" ./autogen.sh)
	log "configure ${CONFIGURE_ARGS[*]}"
	(cd "$dir/tree" && quiet "$dir/build.log" ./configure "${CONFIGURE_ARGS[@]}")
	touch "$dir/.configured"
}

# build_tree DIR: the first time everything grub-mkimage needs (gnulib, grub-core with every
# module, grub-mkimage), marked by DIR/.built; afterwards only our module and the module
# dependency list (every .mod depends on moddep.lst, so a plain make would regenerate all
# of them for a change in one).
build_tree() {
	local dir=$1 t=$1/tree
	if ! cmp -s "$here/gptprio.c" "$t/grub-core/commands/twinslot_gptprio.c"; then
		cp "$here/gptprio.c" "$t/grub-core/commands/twinslot_gptprio.c"
	fi
	if [ -f "$dir/.built" ]; then
		log "make gptprio.mod moddep.lst (the rest of grub-core is built)"
		quiet "$dir/build.log" make -C "$t/grub-core" gptprio.mod moddep.lst
		return 0
	fi
	log "make -j2: gnulib, grub-core, grub-mkimage (the first build of this tree takes minutes)"
	quiet "$dir/build.log" make -j2 -C "$t/grub-core/lib/gnulib"
	quiet "$dir/build.log" make -j2 -C "$t/grub-core"
	quiet "$dir/build.log" make -j2 -C "$t" grub-mkimage
	touch "$dir/.built"
}

result=""
cleanup() { if [ -n "$result" ]; then rm -rf "$result"; fi; }

main() {
	# Without deb-src (and not root to add it) a finished build of the same inputs still serves.
	if ! have_source && [ "$(id -u)" != 0 ]; then
		local hit
		for hit in "$cache_root"/*-"$key"/BOOTX64.EFI; do
			if [ -f "$hit" ]; then
				log "cached (no deb-src to check the Debian version): ${hit%/BOOTX64.EFI}"
				printf '%s\n' "$hit"
				return 0
			fi
		done
	fi
	ensure_deb_src
	ver=$(source_version)
	local final="$cache_root/$ver-$key"
	if [ -f "$final/BOOTX64.EFI" ]; then
		log "cached: $final"
		printf '%s\n' "$final/BOOTX64.EFI"
		return 0
	fi
	ensure_build_deps
	fetch_source "$ver"

	export PYTHON=${PYTHON:-python3}
	if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; fi

	# One build tree per Debian version and configuration, reused by every later build and
	# locked while in use.
	local work
	work="$cache_root/work/$ver-$(tree_stamp "$ver")"
	mkdir -p "$cache_root/work"
	exec 9>"$work.lock"
	flock 9
	if [ -f "$final/BOOTX64.EFI" ]; then # another build.sh made it while we waited
		printf '%s\n' "$final/BOOTX64.EFI"
		return 0
	fi
	prepare_tree "$work"
	build_tree "$work"

	result=$(mktemp -d "$cache_root/.result-$ver-$key.XXXXXX")
	chmod 0755 "$result" # mktemp -d makes it private
	trap cleanup EXIT
	log "grub-mkimage -O x86_64-efi ${MODULES[*]}"
	quiet "$work/build.log" "$work/tree/grub-mkimage" -O x86_64-efi -d "$work/tree/grub-core" \
		-p /EFI/BOOT -o "$result/BOOTX64.EFI" "${MODULES[@]}"
	printf '%s\n' "$ver" >"$result/debian-version"
	printf '%s\n' "${MODULES[@]}" >"$result/modules"
	cp "$here/gptprio.c" "$result/gptprio.c"
	rm -rf "$final"
	mv "$result" "$final"
	result=""
	log "built $final/BOOTX64.EFI"
	printf '%s\n' "$final/BOOTX64.EFI"
}

main "$@"
