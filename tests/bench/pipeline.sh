#!/usr/bin/env bash
# Pipeline benchmark: `bitdustctl local backup`/`restore` against `restic
# backup`/`restore` with a local repository, on the same generated tree, in
# the same run (our restore is checked bit-exact with diff -r). Prints wall
# time, peak RSS and the ratios; a second backup of the unchanged tree by
# each tool, with what it added to the store; then our peak RSS on a tree
# 10x smaller, to show memory does not grow with input size.
#
#   bash tests/bench/pipeline.sh [SIZE_MB]      (default 1000; needs restic and GNU time:
#                                                 apt-get install restic time)
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mb=${1:-1000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --quiet --release -p bitdustctl
ctl="$CARGO_TARGET_DIR/release/bitdustctl"
command -v restic >/dev/null || { echo "restic is not installed: apt-get install restic" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "GNU time is not installed: apt-get install time" >&2; exit 1; }

work=${BENCH_DIR:-$(mktemp -d /var/tmp/bitdust-bench.XXXXXX)}
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

. tests/bench/common.sh

echo "generating a ${size_mb} MB tree and a $((size_mb / 10)) MB tree in $work ..."
gen "$work/big" "$size_mb"
gen "$work/small" $((size_mb / 10))
du -sh "$work/big" "$work/small"
# Warm the page cache equally for both tools.
cat $(find "$work/big" -type f) > /dev/null

export BITDUST_KEYS="$work/keys" RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$work/restic-cache"
restic init --quiet --repo "$work/restic" >/dev/null

ours=$(measure bitdust "$ctl" local backup "$work/big" --to "$work/ours" --suppliers 18 --quiet)
theirs=$(measure restic restic --quiet --repo "$work/restic" backup "$work/big")
stored1=$(du -sm "$work/ours" | cut -f1); rstored1=$(du -sm "$work/restic" | cut -f1)
# The nightly case: the same tree again, unchanged.
ours2=$(measure bitdust-again "$ctl" local backup "$work/big" --to "$work/ours" --suppliers 18 --quiet)
theirs2=$(measure restic-again restic --quiet --repo "$work/restic" backup "$work/big")
stored2=$(du -sm "$work/ours" | cut -f1); rstored2=$(du -sm "$work/restic" | cut -f1)
ours_r=$(measure bitdust-restore "$ctl" local restore "$work/ours" --to "$work/ours-out" --quiet)
theirs_r=$(measure restic-restore restic --quiet --repo "$work/restic" restore latest --target "$work/restic-out")
diff -r --no-dereference "$work/big" "$work/ours-out$work/big" >/dev/null || { echo "our restore differs from the input" >&2; exit 1; }
rm -rf "$work/ours-out" "$work/restic-out"
small=$(measure bitdust-small "$ctl" local backup "$work/small" --to "$work/ours-small" --suppliers 18 --quiet)

read -r _ ow orss <<<"$ours"
read -r _ tw trss <<<"$theirs"
read -r _ sw srss <<<"$small"
read -r _ orw orrss <<<"$ours_r"
read -r _ trw trrss <<<"$theirs_r"
stored=$(du -sm "$work/ours" | cut -f1); rstored=$(du -sm "$work/restic" | cut -f1)
echo
echo "input: $(du -sm "$work/big" | cut -f1) MB; machine: $(nproc) cores"
printf "%-28s %8s %12s %10s\n" tool wall_s peak_rss_MiB stored_MB
printf "%-28s %8s %12.1f %10s\n" "bitdustctl local backup N=18" "$ow" "$(calc "$orss/1024")" "$stored"
printf "%-28s %8s %12.1f %10s\n" "restic backup" "$tw" "$(calc "$trss/1024")" "$rstored"
printf "%-28s %8s %12.1f\n" "bitdustctl local restore" "$orw" "$(calc "$orrss/1024")"
printf "%-28s %8s %12.1f\n" "restic restore" "$trw" "$(calc "$trrss/1024")"
printf "backup:  throughput ratio (restic wall / ours): %.2f   peak RSS ratio (ours / restic): %.2f\n" \
  "$(calc "$tw/$ow")" "$(calc "$orss/$trss")"
printf "restore: throughput ratio (restic wall / ours): %.2f   peak RSS ratio (ours / restic): %.2f\n" \
  "$(calc "$trw/$orw")" "$(calc "$orrss/$trrss")"
read -r _ o2w _ <<<"$ours2"
read -r _ t2w _ <<<"$theirs2"
printf "second backup, unchanged tree: ours %s s, restic %s s, ratio (restic wall / ours): %.2f\n" \
  "$o2w" "$t2w" "$(calc "$t2w/$o2w")"
printf "store growth of that second backup: ours %d MB, restic %d MB (first backup: ours %d MB, restic %d MB)\n" \
  $((stored2 - stored1)) $((rstored2 - rstored1)) "$stored1" "$rstored1"
printf "our peak RSS: %.1f MiB on %d MB vs %.1f MiB on %d MB\n" \
  "$(calc "$srss/1024")" $((size_mb / 10)) "$(calc "$orss/1024")" "$size_mb"
