#!/usr/bin/env bash
# Metadata benchmark (issue 18, docs/metadata.md), in one run:
#   1. the pipeline bench's mixed tree (SIZE_MB, default 1300) with a few
#      hundred entries given xattrs, an ACL and hard links: the bytes per
#      entry a snapshot's metadata takes now, and with only the fields it
#      kept before issue 18 (examples/node_sizes);
#   2. three backups of the unchanged tree, ours and restic's, alternated:
#      wall times and their ratio;
#   3. a sparse file of 10 GiB holding 1 MiB of data: our backup against
#      restic's and against our own backup of a dense 1 MiB file, and the
#      disk blocks each restore takes (`du`).
#
#   [OLD_CTL=path/to/older/bitdustctl] bash tests/bench/metadata.sh [SIZE_MB]
#                                             (needs restic, GNU time, acl:
#                                             apt-get install restic time acl)
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mb=${1:-1300}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --quiet --release -p bitdustctl
cargo build --quiet --release -p bitdust-pipeline --example node_sizes
ctl="$CARGO_TARGET_DIR/release/bitdustctl"
sizes="$CARGO_TARGET_DIR/release/examples/node_sizes"
command -v restic >/dev/null || { echo "restic is not installed: apt-get install restic" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "GNU time is not installed: apt-get install time" >&2; exit 1; }
command -v setfacl >/dev/null || { echo "setfacl is not installed: apt-get install acl" >&2; exit 1; }

work=${BENCH_DIR:-$(mktemp -d /var/tmp/bitdust-bench.XXXXXX)}
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
. tests/bench/common.sh

src="$work/src"
echo "generating a ${size_mb} MB tree in $work ..."
gen "$src" "$size_mb"
# Some of what issue 18 keeps: xattrs, ACLs, hard links.
n=0
for f in $(find "$src/text" -type f | head -300); do
  setfattr -n user.origin -v "bench $n" "$f"; n=$((n + 1))
done
for f in $(find "$src/bin" -type f | head -100); do setfacl -m u:1001:r "$f"; done
for f in $(find "$src/text" -type f | tail -100); do ln "$f" "$f.link"; done
cat $(find "$src" -type f) > /dev/null

echo
echo "== 1. metadata bytes per entry =="
"$sizes" "$src"

export BITDUST_KEYS="$work/keys" RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$work/restic-cache"
restic init --quiet --repo "$work/restic" >/dev/null
ob() { measure "$1" "$ctl" local backup "$2" --to "$3" --suppliers 7 --quiet; }
rb() { measure "$1" restic --quiet --repo "$work/restic" backup "$2"; }
# OLD_CTL: another bitdustctl (the one before issue 18, built from
# 975bd71) whose unchanged backups are timed in the same alternation, in a
# store of its own.
old() { measure "$1" "$OLD_CTL" local backup "$2" --to "$3" --suppliers 7 --quiet; }
ob first "$src" "$work/ours" >/dev/null
rb first "$src" >/dev/null
[ -z "${OLD_CTL:-}" ] || old first "$src" "$work/old" >/dev/null
ow=(); rw=(); pw=()
for i in 1 2 3; do
  read -r _ w _ <<<"$(ob again "$src" "$work/ours")"; ow+=("$w")
  read -r _ w _ <<<"$(rb again "$src")"; rw+=("$w")
  if [ -n "${OLD_CTL:-}" ]; then read -r _ w _ <<<"$(old again "$src" "$work/old")"; pw+=("$w"); fi
done
med() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
echo
echo "== 2. unchanged backup of $(du -sm "$src" | cut -f1) MB, $(find "$src" | wc -l) entries =="
echo "ours: ${ow[*]} s; restic: ${rw[*]} s; medians ours $(med "${ow[@]}") s, restic $(med "${rw[@]}") s, ratio $(calc "$(med "${ow[@]}")/$(med "${rw[@]}")")"
if [ -n "${OLD_CTL:-}" ]; then
  echo "OLD_CTL ($OLD_CTL): ${pw[*]} s; median $(med "${pw[@]}") s; ours / it $(calc "$(med "${ow[@]}")/$(med "${pw[@]}")")"
fi

echo
echo "== 3. a 10 GiB sparse file holding 1 MiB =="
sp="$work/sparse"; dense="$work/dense"
mkdir -p "$sp" "$dense"
truncate -s 10G "$sp/disk.img"
head -c $((1 << 20)) /dev/urandom > "$dense/one.bin"
dd if="$dense/one.bin" of="$sp/disk.img" bs=1M seek=5000 conv=notrunc status=none
restic init --quiet --repo "$work/restic-sp" >/dev/null
read -r _ osw _ <<<"$(ob sparse "$sp" "$work/ours-sp")"
read -r _ odw _ <<<"$(ob dense "$dense" "$work/ours-dense")"
read -r _ rsw _ <<<"$(measure restic-sparse restic --quiet --repo "$work/restic-sp" backup "$sp")"
"$ctl" local restore "$work/ours-sp" --to "$work/out-sp" --quiet
restic --quiet --repo "$work/restic-sp" restore latest --target "$work/rout-sp"
cmp "$sp/disk.img" "$work/out-sp$sp/disk.img"
ours_kib=$(du -sk "$work/out-sp$sp/disk.img" | cut -f1)
restic_kib=$(du -sk "$work/rout-sp$sp/disk.img" | cut -f1)
echo "backup: ours ${osw} s, our dense 1 MiB ${odw} s (ratio $(calc "$osw/$odw")), restic ${rsw} s (ours / restic $(calc "$osw/$rsw"))"
echo "restored on disk: ours ${ours_kib} KiB, restic ${restic_kib} KiB (its 0.14 in Debian has no restore --sparse), source $(du -sk "$sp/disk.img" | cut -f1) KiB"
