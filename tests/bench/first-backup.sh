#!/usr/bin/env bash
# First backup (issue 19): `bitdustctl local backup` with 1, 2, ... workers
# (and other zstd levels) against `restic backup` into an initialized
# repository, on the same generated tree, in the same run; and the
# physical floor: the bytes we store (the erasure code's twice over)
# divided by this disk's write rate, measured with fdatasync in the same
# run. Each command runs RUNS times in turn (restic, then each of ours);
# medians of wall time, CPU and peak RSS are printed with their ratios to
# restic's and to the floor.
#
#   bash tests/bench/first-backup.sh [SIZE_MB]   (default 1300; RUNS=3; WORKERS="1 2"
#                                                 at the default zstd level (2); OTHER_LEVELS="3 1"
#                                                 with a worker per core; needs restic and GNU time)
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mb=${1:-1300}
runs=${RUNS:-3}
workers=${WORKERS:-1 2}
other_levels=${OTHER_LEVELS-3 1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --quiet --release -p bitdustctl
ctl="$CARGO_TARGET_DIR/release/bitdustctl"
command -v restic >/dev/null || { echo "restic is not installed: apt-get install restic" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "GNU time is not installed: apt-get install time" >&2; exit 1; }

work=${BENCH_DIR:-$(mktemp -d /var/tmp/bitdust-bench.XXXXXX)}
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
. tests/bench/common.sh

src="$work/src"
if [ ! -d "$src" ]; then
  echo "generating a ${size_mb} MB tree in $work ..."
  gen "$src" "$size_mb"
fi
cat $(find "$src" -type f) > /dev/null
export BITDUST_KEYS="$work/keys" RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$work/restic-cache"
# restic's repository is initialized once (its key derivation takes seconds)
# and copied fresh for each run; ours starts from an empty directory.
rm -rf "$work/restic0"
restic init --quiet --repo "$work/restic0" >/dev/null

# One timed run: "wall cpu peak_kib" (CPU = user + system).
run() {
  sync
  /usr/bin/time -f "%e %U %S %M" -o "$work/time.out" "$@" >/dev/null
  awk '{ printf "%s %.2f %s\n", $1, $2 + $3, $4 }' "$work/time.out"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

declare -A wall cpu rss stored
configs=()
for w in $workers; do configs+=("$w:2"); done
for l in $other_levels; do configs+=("0:$l"); done
for i in $(seq "$runs"); do
  rm -rf "$work/restic"; cp -a "$work/restic0" "$work/restic"
  read -r a b c <<<"$(run restic --quiet --repo "$work/restic" backup "$src")"
  wall[restic]+="$a "; cpu[restic]+="$b "; rss[restic]+="$c "
  for cfg in "${configs[@]}"; do
    w=${cfg%%:*} l=${cfg##*:}
    rm -rf "$work/ours"
    wflag=(); [ "$w" = 0 ] || wflag=(--workers "$w")
    read -r a b c <<<"$(run "$ctl" local backup "$src" --to "$work/ours" --suppliers 7 --quiet \
      "${wflag[@]}" --zstd-level "$l")"
    wall[$cfg]+="$a "; cpu[$cfg]+="$b "; rss[$cfg]+="$c "
    stored[${cfg//:/_}]=$(du -sb "$work/ours" | cut -f1)
  done
done
restic_stored=$(du -sb "$work/restic" | cut -f1)

# The disk's write rate with fdatasync: 1 GiB of random bytes (made first,
# so that only the writing is timed), written and flushed three times, each
# time into a new file (a virtual disk can be much faster on blocks it has
# been given before: the spread says so).
head -c $((1024 * 1024 * 1024)) /dev/urandom > /dev/shm/bitdust-floor.bin
rates=""
for i in 1 2 3; do
  sync
  s=$(date +%s.%N)
  dd if=/dev/shm/bitdust-floor.bin of="$work/floor$i.bin" bs=4M conv=fdatasync status=none
  e=$(date +%s.%N)
  rates+="$(calc "1073741824 / ($e - $s)") "
done
rm -f /dev/shm/bitdust-floor.bin "$work"/floor?.bin
rate=$(echo "$rates" | tr ' ' '\n' | grep . | median)

med() { echo "$1" | tr ' ' '\n' | grep . | median; }
rw=$(med "${wall[restic]}"); rc=$(med "${cpu[restic]}"); rr=$(med "${rss[restic]}")
echo
echo "input: $(du -sm "$src" | cut -f1) MB, $(find "$src" -type f | wc -l) files; $(nproc) cores; 7 positions (xor); medians of $runs runs"
printf "disk write rate with fdatasync: %.0f MB/s (runs: %s)\n" "$(calc "$rate / 1e6")" "$(echo $rates | awk '{ for (i = 1; i <= NF; i++) printf "%.0f ", $i / 1e6 }')"
printf "restic: %.2f s wall, %.2f s CPU, %.1f MiB peak; stores %.1f MB\n" "$rw" "$rc" "$(calc "$rr / 1024")" "$(calc "$restic_stored / 1e6")"
printf "%-8s %-6s %8s %8s %10s %10s %10s %8s %10s %8s\n" workers level wall CPU "peak MiB" "/restic" "RSS /r" stored "floor s" "/floor"
for cfg in "${configs[@]}"; do
  w=${cfg%%:*} l=${cfg##*:}
  ow=$(med "${wall[$cfg]}"); oc=$(med "${cpu[$cfg]}"); orss=$(med "${rss[$cfg]}")
  st=${stored[${cfg//:/_}]}
  floor=$(calc "$st / $rate")
  printf "%-8s %-6s %8.2f %8.2f %10.1f %10.2f %10.2f %7.0fM %10.2f %8.2f\n" \
    "$([ "$w" = 0 ] && nproc || echo "$w")" "$l" "$ow" "$oc" "$(calc "$orss / 1024")" \
    "$(calc "$ow / $rw")" "$(calc "$orss / $rr")" "$(calc "$st / 1e6")" "$floor" "$(calc "$ow / $floor")"
done
echo "(floor: the bytes we stored, data and parity, over the disk's write rate; /floor: our wall over it)"
