#!/bin/sh
# mkfixture.sh MODULE_DIR [NAME]
#
# Regenerates testdata/NAME (default: mini) from a kernel module tree such
# as an unpacked Debian linux-image package, ROOT/lib/modules/KVER: copies
# the modules named in NAME.modules into a scratch tree with modules.order,
# modules.builtin and modules.builtin.modinfo filtered to them and to the
# built-in modules named in NAME.builtin, runs depmod there, and keeps only
# the index files (no .ko files). Needs kmod's depmod.
set -eu

src=${1:?usage: mkfixture.sh MODULE_DIR [NAME]}
name=${2:-mini}
here=$(cd "$(dirname "$0")" && pwd)
kver=$(basename "$src")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dst=$tmp/lib/modules/$kver
mkdir -p "$dst" "$tmp/depmod.d"

words() { grep -v '^#' "$1" | tr -s ' \t' '\n\n' | grep .; }
words "$here/$name.modules" >"$tmp/modules"
words "$here/$name.builtin" >"$tmp/builtin"

# modname: base name up to the first '.', '-' as '_' (libkmod's rule).
modnames() { sed -e 's,.*/,,' -e 's,\..*,,' -e 's,-,_,g'; }

# Copy each module (whatever its compression) from the path modules.dep gives.
cut -d: -f1 "$src/modules.dep" >"$tmp/paths"
modnames <"$tmp/paths" | paste -d' ' - "$tmp/paths" >"$tmp/bynames"
while read -r m; do
	p=$(awk -v m="$m" '$1 == m { print $2; exit }' "$tmp/bynames")
	[ -n "$p" ] || { echo "mkfixture: no module $m in $src" >&2; exit 1; }
	mkdir -p "$dst/$(dirname "$p")"
	cp "$src/$p" "$dst/$p"
done <"$tmp/modules"

# Keep the lines of a path list whose module name is in the given set.
keep() { modnames <"$1" | paste -d' ' - "$1" | awk 'NR == FNR { k[$1]; next } $1 in k { print $2 }' "$2" -; }
keep "$src/modules.order" "$tmp/modules" >"$dst/modules.order"
keep "$src/modules.builtin" "$tmp/builtin" >"$dst/modules.builtin"
tr '\0' '\n' <"$src/modules.builtin.modinfo" |
	awk -F. 'NR == FNR { k[$1]; next } $1 in k' "$tmp/builtin" - |
	tr '\n' '\0' >"$dst/modules.builtin.modinfo"

depmod -C "$tmp/depmod.d" -b "$tmp" "$kver"

rm -rf "${here:?}/$name"
mkdir -p "$here/$name"
for f in "$dst"/modules.*; do
	cp "$f" "$here/$name/"
done
echo "$kver" >"$here/$name/KVER"
ls -l "$here/$name"
