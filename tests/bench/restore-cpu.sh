#!/usr/bin/env bash
# Where a network restore's CPU goes (issues 15 and 19): a 7-supplier
# devnet, one snapshot of a SIZE_MB tree, then RUNS restores of it, each
# into a fresh directory after `sync`. For each restore: the wall time and
# the CPU-seconds (user + system, from /proc) of the customer-agent, the
# seven supplier-stores together, the DHT peers and rebuilder together,
# and bitdustctl; then one `bitdustctl local restore` of the same tree
# from 7 directories, the same way. Not a test: nothing here asserts a
# time. Usage: bash tests/bench/restore-cpu.sh [SIZE_MB] [RUNS] [BLOCK_MIB]
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mb=${1:-300}
block_mib=${3:-1}
runs=${2:-5}
source tests/bench/common.sh
devnet_build

work=$(mktemp -d /tmp/bitdust-restorecpu.XXXXXX)
devnet_pid=
cleanup() {
    [ -n "$devnet_pid" ] && kill "$devnet_pid" 2>/dev/null && wait "$devnet_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

python3 tests/bench/make-input.py "$work/data" "$size_mb"
devnet_up "$work/net" 7 "$block_mib"
B="$R/bitdustctl"
"$B" backup --quiet "$work/data"

# "daemon ticks" for every daemon of this devnet.
ticks() {
    local p
    for p in $(pgrep -f "$work/net/"); do
        local name stat
        name=$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | awk '{print $1}') || continue
        stat=$(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null) || continue
        echo "$(basename "$name") $stat"
    done
}
hz=$(getconf CLK_TCK)
echo "input: $(du -sb "$work/data" | cut -f1) bytes, 7 suppliers; CPU-seconds per restore"
printf '%-8s %6s %7s %10s %10s %11s %7s\n' run wall agent suppliers dht+rebld bitdustctl total
for i in $(seq "$runs"); do
    rm -rf "$work/out"; sync
    ticks > "$work/t0"
    t0=$(date +%s.%N)
    /usr/bin/time -o "$work/ctl" -f "%U %S" "$B" restore --quiet --to "$work/out"
    t1=$(date +%s.%N)
    ticks > "$work/t1"
    python3 - "$work/t0" "$work/t1" "$work/ctl" "$t0" "$t1" "$hz" "$i" <<'EOF'
import sys
def load(path):
    out = {}
    for line in open(path):
        name, u, s = line.split()
        out.setdefault(name, 0)
        out[name] += int(u) + int(s)
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
hz = int(sys.argv[6])
d = {k: (b[k] - a.get(k, 0)) / hz for k in b}
agent = d.get("bitdust-customer-agent", 0)
sup = d.get("bitdust-supplier-store", 0)
other = d.get("bitdust-dht-peer", 0) + d.get("bitdust-rebuilder", 0)
u, s = map(float, open(sys.argv[3]).read().split())
wall = float(sys.argv[5]) - float(sys.argv[4])
print(f"{sys.argv[7]:<8} {wall:6.2f} {agent:7.2f} {sup:10.2f} {other:10.2f} {u + s:11.2f} {agent + sup + other + u + s:7.2f}")
EOF
done
diff -r "$work/data" "$work/out$work/data" >/dev/null && echo "network restore: bit-exact"

export BITDUST_KEYS="$work/keys"
"$B" local backup --quiet "$work/data" --to "$work/local" --suppliers 7 --block-size "${block_mib}M"
find "$work/local" -type f -exec cat {} + > /dev/null
for i in $(seq "$runs"); do
    rm -rf "$work/local-out"; sync
    /usr/bin/time -o "$work/ctl" -f "%e %U %S" "$B" local restore --quiet "$work/local" --to "$work/local-out"
    read -r e u s < "$work/ctl"
    python3 -c "print(f'local {$i:<2} {$e:6.2f} s wall, {$u + $s:.2f} CPU-s')"
done
