#!/usr/bin/env bash
# Snapshot benchmark (issue 15): `bitdustctl local` against restic with a
# local repository, on the same generated tree, in the same run, 7
# positions (xor):
#   1. first backup: wall time and peak RSS;
#   2. four more backups of the unchanged tree: wall time, and what the
#      four together add to each store;
#   3. a ~1% change (appends to large files, an in-place overwrite, a 4 KiB
#      insertion in the middle of a large file, a new file): what each
#      store grows by;
#   4. snapshots up to 30 with small changes: the peak RSS of every later
#      backup, and of a restore of snapshot 30 against one of snapshot 1
#      and restic's restore of its latest;
#      the fragment bytes a one-file restore fetches against a whole one;
#   5. forget all but the newest and prune: wall time and peak RSS for
#      both tools; then our restore of the kept snapshot, checked
#      bit-exact with diff -r.
#
#   bash tests/bench/snapshots.sh [SIZE_MB]    (default 1300; needs restic and GNU time:
#                                               apt-get install restic time)
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mb=${1:-1300}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --quiet --release -p bitdustctl
ctl="$CARGO_TARGET_DIR/release/bitdustctl"
command -v restic >/dev/null || { echo "restic is not installed: apt-get install restic" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "GNU time is not installed: apt-get install time" >&2; exit 1; }

work=${BENCH_DIR:-$(mktemp -d /var/tmp/bitdust-bench.XXXXXX)}
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
. tests/bench/common.sh

src="$work/src"
echo "generating a ${size_mb} MB tree in $work ..."
gen "$src" "$size_mb"
cat $(find "$src" -type f) > /dev/null

export BITDUST_KEYS="$work/keys" RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$work/restic-cache"
restic init --quiet --repo "$work/restic" >/dev/null
ours() { "$ctl" local "$@"; }
bytes() { du -sb "$1" | cut -f1; }
ob() { measure "$1" "$ctl" local backup "$src" --to "$work/ours" --suppliers 7 --quiet; }
rb() { measure "$1" restic --quiet --repo "$work/restic" backup "$src"; }

# 1. First backup.
read -r _ o1w o1rss <<<"$(ob first)"
read -r _ r1w r1rss <<<"$(rb first)"
os1=$(bytes "$work/ours"); rs1=$(bytes "$work/restic")

# 2. Four unchanged backups.
ow_u=(); rw_u=()
for i in 1 2 3 4; do
  read -r _ w _ <<<"$(ob again)"; ow_u+=("$w")
  read -r _ w _ <<<"$(rb again)"; rw_u+=("$w")
done
os2=$(bytes "$work/ours"); rs2=$(bytes "$work/restic")

# 3. A ~1% change.
big_text=$(find "$src/text" -type f -printf '%s %p\n' | sort -rn | awk 'NR <= 3 { print $2 }')
for f in $big_text; do head -c $((700 * 1024)) /dev/urandom | base64 >> "$f"; done
mapfile -t rands < <(ls -S "$src"/random/r*.bin)
head -c $((2 * 1024 * 1024)) /dev/urandom >> "${rands[0]}"
dd if=/dev/urandom of="${rands[1]:-${rands[0]}}" bs=1M count=1 seek=2 conv=notrunc status=none
python3 - "${rands[2]:-${rands[0]}}" <<'PY'
import os, sys
p = sys.argv[1]
data = open(p, 'rb').read()
mid = len(data) // 2
open(p, 'wb').write(data[:mid] + os.urandom(4096) + data[mid:])
PY
head -c $((4 * 1024 * 1024)) /dev/urandom > "$src/random/new.bin"
read -r _ o3w _ <<<"$(ob change)"
read -r _ r3w _ <<<"$(rb change)"
os3=$(bytes "$work/ours"); rs3=$(bytes "$work/restic")

# 4. Up to 30 snapshots, a small change each time.
max_later=0
for n in $(seq 7 30); do
  echo "snapshot $n" >> "$src/text/d0/doc0.txt"
  head -c $((256 * 1024)) /dev/urandom > "$src/random/n$n.bin"
  read -r _ _ rss <<<"$(ob later)"
  [ "$rss" -gt "$max_later" ] && max_later=$rss
  restic --quiet --repo "$work/restic" backup "$src" >/dev/null
done
id=$(ours list "$work/ours" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["backup_id"])')
read -r _ rs1w rs1rss <<<"$(measure restore-1 "$ctl" local restore "$work/ours" "$id@1" --to "$work/out1" --quiet)"
rm -rf "$work/out1"
read -r _ rs30w rs30rss <<<"$(measure restore-30 "$ctl" local restore "$work/ours" "$id@30" --to "$work/out30" --quiet)"
diff -r --no-dereference "$src" "$work/out30$src" >/dev/null || { echo "our restore of snapshot 30 differs from the input" >&2; exit 1; }
rm -rf "$work/out30"
read -r _ rr30w rr30rss <<<"$(measure restic-restore restic --quiet --repo "$work/restic" restore latest --target "$work/rout30")"
rm -rf "$work/rout30"
os4=$(bytes "$work/ours"); rs4=$(bytes "$work/restic")
# One file of snapshot 30: only the packs holding its chunks are read.
one=$("$ctl" local restore "$work/ours" "$id@30" --to "$work/one" --include "$src/text/d0/doc0.txt" --json)
cmp "$src/text/d0/doc0.txt" "$work/one$src/text/d0/doc0.txt" || { echo "the one-file restore differs" >&2; exit 1; }
one_fetched=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["fragment_bytes_fetched"])' "$one")
all_fetched=$("$ctl" local restore "$work/ours" "$id@30" --to "$work/all" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["fragment_bytes_fetched"])')
rm -rf "$work/one" "$work/all"

# 5. Forget 29 of 30, prune.
read -r _ opw oprss <<<"$(measure prune "$ctl" local forget "$work/ours" --keep-last 1 --prune --grace 0h --quiet)"
read -r _ rpw rprss <<<"$(measure prune restic --quiet --repo "$work/restic" forget --keep-last 1 --prune)"
os5=$(bytes "$work/ours"); rs5=$(bytes "$work/restic")
read -r _ rkw _ <<<"$(measure restore-kept "$ctl" local restore "$work/ours" --to "$work/outk" --quiet)"
diff -r --no-dereference "$src" "$work/outk$src" >/dev/null || { echo "our restore after the prune differs from the input" >&2; exit 1; }
rm -rf "$work/outk"
"$ctl" local check "$work/ours" --quiet

mb() { calc "$1/1048576"; }
echo
echo "input: $(du -sm "$src" | cut -f1) MB; machine: $(nproc) cores; 7 positions (xor)"
printf "1. first backup: ours %s s, %.1f MiB RSS; restic %s s, %.1f MiB RSS; wall ratio (ours / restic) %.2f, RSS ratio %.2f\n" \
  "$o1w" "$(mb $((o1rss * 1024)))" "$r1w" "$(mb $((r1rss * 1024)))" "$(calc "$o1w/$r1w")" "$(calc "$o1rss/$r1rss")"
printf "   stored: ours %.1f MiB, restic %.1f MiB\n" "$(mb "$os1")" "$(mb "$rs1")"
printf "2. four unchanged backups: ours %s s, restic %s s\n" "${ow_u[*]}" "${rw_u[*]}"
printf "   together they add: ours %d bytes (%.4f%% of the first), restic %d bytes (%.4f%%)\n" \
  $((os2 - os1)) "$(calc "100*($os2-$os1)/$os1")" $((rs2 - rs1)) "$(calc "100*($rs2-$rs1)/$rs1")"
printf "3. ~1%% change: ours %s s, restic %s s; growth ours %.2f MiB, restic %.2f MiB, ratio %.2f\n" \
  "$o3w" "$r3w" "$(mb $((os3 - os2)))" "$(mb $((rs3 - rs2)))" "$(calc "($os3-$os2)/($rs3-$rs2)")"
printf "4. backups 7..30: highest peak RSS %.1f MiB = %.2fx the first backup's\n" \
  "$(mb $((max_later * 1024)))" "$(calc "$max_later/$o1rss")"
printf "   restore of snapshot 1: %s s, %.1f MiB; of snapshot 30: %s s, %.1f MiB (%.2fx)\n" \
  "$rs1w" "$(mb $((rs1rss * 1024)))" "$rs30w" "$(mb $((rs30rss * 1024)))" "$(calc "$rs30rss/$rs1rss")"
printf "   restic's restore of the same (latest): %s s, %.1f MiB; ours / restic: wall %.2f, RSS %.2f\n" \
  "$rr30w" "$(mb $((rr30rss * 1024)))" "$(calc "$rs30w/$rr30w")" "$(calc "$rs30rss/$rr30rss")"
printf "   stores after 30 snapshots: ours %.1f MiB, restic %.1f MiB\n" "$(mb "$os4")" "$(mb "$rs4")"
printf "   restoring one file (%d bytes) of snapshot 30 fetched %.2f MiB of fragments, the whole snapshot %.1f MiB (%.4f)\n" \
  "$(stat -c %s "$src/text/d0/doc0.txt")" "$(mb "$one_fetched")" "$(mb "$all_fetched")" "$(calc "$one_fetched/$all_fetched")"
printf "5. forget 29 of 30 + prune: ours %s s, %.1f MiB RSS, store %.1f -> %.1f MiB; restic %s s, %.1f MiB RSS, store %.1f -> %.1f MiB\n" \
  "$opw" "$(mb $((oprss * 1024)))" "$(mb "$os4")" "$(mb "$os5")" "$rpw" "$(mb $((rprss * 1024)))" "$(mb "$rs4")" "$(mb "$rs5")"
printf "   restore of the kept snapshot after the prune: %s s, bit-exact; check clean\n" "$rkw"
