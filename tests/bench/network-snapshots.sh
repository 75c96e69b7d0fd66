#!/usr/bin/env bash
# Snapshots over the devnet (issue 15): a 7-supplier bitdust-devnet of
# separate processes on loopback. In one run: a full-copy backup of the
# input (`--full-copy`), then `bitdustctl backup` (a snapshot) four times (first; unchanged
# twice; after rewriting ~1% of the bytes), the bytes the suppliers hold
# after each, restores of the newest snapshot and of the full copy, and `bitdustctl local`
# backup and restore of the same input into 7 directories as the peer.
# The restores of the newest snapshot alternate with the local ones,
# RESTORE_PAIRS times each (5 by default), medians.
# The devnet runs every daemon but the customer-agent on one worker thread
# (see bitdust-devnet); the full copy's restore is timed 3 times after
# `sync`, median.
# Both restores, and a first backup of a copy of the input each way, run
# again with the customer on CPU 0 and the suppliers on CPU 1 (taskset),
# as if the suppliers were the other machines they are.
# Prints seconds and ratios. Not a test: nothing here asserts a time.
# Usage: bash tests/bench/network-snapshots.sh [SIZE_MB] [BLOCK_MIB]
# (BLOCK_MIB: the block/pack size of both paths, 1 by default as in
# earlier runs; the product's default is 4)
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mb=${1:-300}
block_mib=${2:-1}
source tests/bench/common.sh
devnet_build

work=$(mktemp -d /tmp/bitdust-netsnap.XXXXXX)
devnet_pid=
cleanup() {
    [ -n "$devnet_pid" ] && kill "$devnet_pid" 2>/dev/null && wait "$devnet_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

python3 tests/bench/make-input.py "$work/data" "$size_mb"
bytes=$(du -sb "$work/data" | cut -f1)

now() { date +%s.%N; }
held() { du -sb "$work"/net/nodes/supplier-*/state | awk '{s += $1} END {print s}'; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }

devnet_up "$work/net" 7 "$block_mib"
B="$R/bitdustctl"

h0=$(held)
t0=$(now); "$B" backup --full-copy --quiet "$work/data"; t1=$(now)
full=$(secs "$t0" "$t1"); h_full=$(held)

declare -a run held_after
for i in 1 2 3; do
    t0=$(now); "$B" --json backup "$work/data" > "$work/s$i.json"; t1=$(now)
    run[$i]=$(secs "$t0" "$t1"); held_after[$i]=$(held)
done
# ~1% of the bytes change: 3 MB rewritten in the middle of one text file,
# its size and the rest of the tree unchanged.
python3 - "$work/data/f0000" "$size_mb" <<'EOF'
import sys, random
path, mb = sys.argv[1], int(sys.argv[2])
n = max(1, mb * (1 << 20) // 100)
rnd = random.Random(11)
with open(path, "r+b") as f:
    f.seek(2 << 20)
    f.write(bytes(rnd.choice(b"abcdefghij \n") for _ in range(n)))
EOF
t0=$(now); "$B" --json backup "$work/data" > "$work/s4.json"; t1=$(now)
run[4]=$(secs "$t0" "$t1"); held_after[4]=$(held)

# Each restore runs 3 times into a fresh directory, each time with no
# dirty pages left by the steps before it (writing them back would tax
# whichever restore comes next); the median counts. A local restore's
# time moves a lot from run to run on a small VM, and the ratio with it.
restore_median() { # restore_median OUT CMD...: prints the median wall
    local out=$1; shift
    local ts=()
    for _ in 1 2 3; do
        rm -rf "$out"; sync
        t0=$(now); "$@" --to "$out"; t1=$(now)
        ts+=("$(secs "$t0" "$t1")")
    done
    printf '%s\n' "${ts[@]}" | sort -n | sed -n 2p
}
# The full copy (version 1, of the input before the 1% change) the same way.
id=$(python3 -c "import json; print(json.load(open('$work/s1.json'))['backup_id'])")
full_restore=$(restore_median "$work/full-out" "$B" restore --quiet "$id@1")
rm -rf "$work/full-out"

export BITDUST_KEYS="$work/keys"
sync
t0=$(now); "$B" local backup --quiet "$work/data" --to "$work/local" --suppliers 7 --block-size "${block_mib}M"; t1=$(now)
local_backup=$(secs "$t0" "$t1")
# The local backup leaves its fragments out of the page cache (it starts
# their writeback as it writes them); the suppliers' are cached. Both
# restores read from the cache: the local store is read once first.
find "$work/local" -type f -exec cat {} + > /dev/null

# The newest snapshot restored over the network and from the local store
# in turn, RESTORE_PAIRS times (5 by default), each into a fresh directory
# after `sync`; the medians count. Alternating keeps this VM's drift
# (writeback, page cache, neighbours) out of the ratio: single runs put it
# anywhere from 0.4 to 0.6 for the same binaries.
pairs=${RESTORE_PAIRS:-5}
median() { printf '%s\n' "$@" | sort -n | python3 -c "import sys, statistics; print(statistics.median(float(x) for x in sys.stdin))"; }
restore_pairs() { # restore_pairs [taskset -c 0]: prints "network local" medians
    local n=() l=()
    for _ in $(seq "$pairs"); do
        rm -rf "$work/net-out"; sync
        t0=$(now); "$@" "$B" restore --quiet --to "$work/net-out"; t1=$(now)
        n+=("$(secs "$t0" "$t1")")
        rm -rf "$work/local-out"; sync
        t0=$(now); "$@" "$B" local restore --quiet "$work/local" --to "$work/local-out"; t1=$(now)
        l+=("$(secs "$t0" "$t1")")
    done
    echo "restores${*:+ ($*)}: network ${n[*]} s; local ${l[*]} s" >&2
    echo "$(median "${n[@]}") $(median "${l[@]}")"
}
read -r net_restore local_restore < <(restore_pairs)
diff -r "$work/data" "$work/net-out$work/data" >/dev/null && echo "network restore of the newest snapshot: bit-exact"
diff -r "$work/data" "$work/local-out$work/data" >/dev/null && echo "local restore: bit-exact"

# The same two restores with the suppliers where they are in use: on other
# machines. On two CPUs, the devnet's other nodes get CPU 1 and the
# customer (its agent, bitdustctl, and the local restore alike) CPU 0, so
# neither restore shares its CPU with a supplier.
pinned_net= pinned_local= pinned_nb= pinned_lb=
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    for p in $(pgrep -f -- "--config $work/net/nodes/"); do
        case "$(tr '\0' ' ' < /proc/$p/cmdline)" in
            *"/nodes/customer/"*) taskset -a -p -c 0 "$p" >/dev/null ;;
            *) taskset -a -p -c 1 "$p" >/dev/null ;;
        esac
    done
    read -r pinned_net pinned_local < <(restore_pairs taskset -c 0)
    rm -rf "$work/net-out" "$work/local-out"
    # A first backup each way, pinned the same: a copy of the input at
    # another path is another backup, which shares nothing with the first.
    cp -a "$work/data" "$work/data2"
    sync
    t0=$(now); taskset -c 0 "$B" backup --quiet "$work/data2"; t1=$(now)
    pinned_nb=$(secs "$t0" "$t1")
    sync
    t0=$(now); taskset -c 0 "$B" local backup --quiet "$work/data2" --to "$work/local2" --suppliers 7 --block-size "${block_mib}M"; t1=$(now)
    pinned_lb=$(secs "$t0" "$t1")
fi

echo "input: $bytes bytes ($size_mb MB requested; 1/3 random), 7 suppliers, $block_mib MiB blocks/packs"
python3 - "$work" "$bytes" "$full" "$h0" "$h_full" "$local_backup" "$local_restore" "$net_restore" "$full_restore" \
    "${run[1]}" "${run[2]}" "${run[3]}" "${run[4]}" \
    "${held_after[1]}" "${held_after[2]}" "${held_after[3]}" "${held_after[4]}" <<'EOF'
import json, sys
a = sys.argv
work, size = a[1], int(a[2])
full, h0, h_full, lb, lr, nr = float(a[3]), int(a[4]), int(a[5]), float(a[6]), float(a[7]), float(a[8])
fr = float(a[9])
runs = [float(x) for x in a[10:14]]
held = [int(x) for x in a[14:18]]
snap = [json.load(open(f"{work}/s{i}.json")) for i in range(1, 5)]
print(f"full-copy backup:            {full:7.2f} s, suppliers hold +{(h_full - h0) / 1e6:.1f} MB")
before = h_full
names = ["snapshot 1 (first)", "snapshot 2 (unchanged)", "snapshot 3 (unchanged)", "snapshot 4 (~1% changed)"]
for i, (n, t, h, s) in enumerate(zip(names, runs, held, snap)):
    c = s["snapshot"]
    print(f"{n:28s} {t:7.2f} s = {t / runs[0]:.3f}x the first, read {c['bytes_read'] / 1e6:.1f} MB, "
          f"suppliers hold +{(h - before) / 1e6:.2f} MB ({(h - before) / max(1, held[0] - h_full) * 100:.2f}% of the first)")
    before = h
print(f"first snapshot / full copy:  {runs[0] / full:.2f}x wall")
print(f"local backup (7 dirs):       {lb:7.2f} s; first network snapshot / local: {runs[0] / lb:.2f}x")
print(f"restore newest snapshot:     {nr:7.2f} s network, {lr:.2f} s local: network speed {lr / nr:.2f}x local")
print(f"restore the full copy:       {fr:7.2f} s network: {lr / fr:.2f}x local; snapshot / full copy speed {fr / nr:.2f}x")
EOF
if [ -n "$pinned_net" ]; then
    python3 -c "n, l = $pinned_nb, $pinned_lb; print(f'first backup, customer on CPU 0 and the suppliers on CPU 1: {n:.2f} s network, {l:.2f} s local: network speed {l / n:.2f}x local')"
    python3 -c "n, l = $pinned_net, $pinned_local; print(f'restore, customer on CPU 0 and the suppliers on CPU 1: {n:.2f} s network, {l:.2f} s local: network speed {l / n:.2f}x local')"
fi
