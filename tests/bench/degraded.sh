#!/usr/bin/env bash
# Restores with three of seven suppliers dead (issue 19): a 7-supplier
# bitdust-devnet of separate processes on loopback; one snapshot of a
# 300 MB file and one of a tree of 4,251 small files; each restored three
# times healthy, then `kill -9` of the suppliers at positions 1, 3 and 5
# (the code's tolerance: nothing answers, nothing closes the connections)
# and each restored five times again. Medians, every restore bit-exact
# (`diff -r`). The restores write into a tmpfs (/dev/shm): writing 4,251
# files to this VM's disk moved a restore's time by 2x from run to run,
# and the two sides differ only in what comes over the network. Prints
# degraded / healthy ratios.
# Not a test: nothing here asserts a time.
# Usage: bash tests/bench/degraded.sh [SIZE_MB] [BLOCK_MIB]   (300, 4)
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mb=${1:-300}
block_mib=${2:-4}
source tests/bench/common.sh
devnet_build

work=$(mktemp -d /tmp/bitdust-degraded.XXXXXX)
shm=$(mktemp -d /dev/shm/bitdust-degraded.XXXXXX)
devnet_pid=
cleanup() {
    [ -n "$devnet_pid" ] && kill "$devnet_pid" 2>/dev/null && wait "$devnet_pid" 2>/dev/null
    rm -rf "$work" "$shm"
}
trap cleanup EXIT

# The big file: half text, half random (as make-input.py's mix).
mkdir -p "$work/big" "$work/small"
python3 - "$work/big/file" "$size_mb" <<'PY'
import os, random, sys
path, mb = sys.argv[1], int(sys.argv[2])
rng = random.Random(19)
words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(2, 10))) for _ in range(5000)]
with open(path, 'wb') as f:
    for i in range(mb):
        if i % 2:
            f.write(os.urandom(1 << 20))
        else:
            s = ' '.join(rng.choice(words) for _ in range(200000)).encode()
            f.write(s[: 1 << 20])
PY
# 4,251 small files of 1-40 KB of text in 60 directories.
python3 - "$work/small" <<'PY'
import os, random, sys
out = sys.argv[1]
rng = random.Random(4251)
words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(2, 10))) for _ in range(3000)]
for i in range(4251):
    d = os.path.join(out, f'd{i % 60}')
    os.makedirs(d, exist_ok=True)
    n = rng.randint(1, 40) * 1024
    s = ' '.join(rng.choice(words) for _ in range(n // 4)).encode()[:n]
    with open(os.path.join(d, f'f{i}.txt'), 'wb') as f:
        f.write(s)
PY

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
restore_median() { # restore_median SRC ID OUT: the median wall of 5, each checked
    local src=$1 id=$2 out=$3 ts=()
    for _ in 1 2 3 4 5; do
        rm -rf "$out"
        t0=$(now); "$B" restore --quiet "$id" --to "$out"; t1=$(now)
        ts+=("$(secs "$t0" "$t1")")
        diff -r "$src" "$out$src" >/dev/null || { echo "restore of $src differs" >&2; exit 1; }
    done
    printf '%s\n' "${ts[@]}" | sort -n | sed -n 3p
}

devnet_up "$work/net" 7 "$block_mib"
B="$R/bitdustctl"
idof() { python3 -c "import json,sys; d=json.load(sys.stdin); print(f\"{d['backup_id']}@{d['version']}\")"; }
big_id=$("$B" --json backup "$work/big" | idof)
small_id=$("$B" --json backup "$work/small" | idof)

healthy_big=$(restore_median "$work/big" "$big_id" "$shm/out")
healthy_small=$(restore_median "$work/small" "$small_id" "$shm/out")
for s in 1 3 5; do
    kill -9 "$(cat "$work/net/nodes/supplier-$s/bitdust-supplier-store.pid")"
done
sleep 1
degraded_big=$(restore_median "$work/big" "$big_id" "$shm/out")
degraded_small=$(restore_median "$work/small" "$small_id" "$shm/out")
rm -rf "$shm/out"
"$B" --json restore "$big_id" --to "$shm/last" > "$work/last.json"
left_out=$(python3 -c "import json; d=json.load(open('$work/last.json')); print(d['positions_left_out'], d['fragments_read_around'], d['positions_silent'])")

echo "7 suppliers, $block_mib MiB packs; positions 1, 3, 5 killed (kill -9)"
echo "the last degraded restore: positions left out, fragments read around, positions that answered nothing: $left_out"
printf '%-32s %8s %8s %8s\n' "" healthy degraded ratio
printf '%-32s %7ss %7ss %8s\n' "a ${size_mb} MB file" "$healthy_big" "$degraded_big" "$(calc "$degraded_big / $healthy_big")"
printf '%-32s %7ss %7ss %8s\n' "4,251 small files ($(du -sm "$work/small" | cut -f1) MB)" "$healthy_small" "$degraded_small" "$(calc "$degraded_small / $healthy_small")"
