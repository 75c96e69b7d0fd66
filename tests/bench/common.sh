# Shared by the bench scripts (sourced, with $work set): the generated
# tree, arithmetic, and timing one command with GNU time.

# A mixed tree: 40% compressible text, 40% real binaries (from /usr), 20% random.
gen() { # gen DIR MB
  local dir=$1 mb=$2
  mkdir -p "$dir/text" "$dir/bin" "$dir/random"
  python3 - "$dir/text" $((mb * 4 / 10)) <<'PY'
import os, random, sys
out, mb = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(2, 10))) for _ in range(5000)]
target, written, i = mb * 1024 * 1024, 0, 0
while written < target:
    lines = [' '.join(rng.choice(words) for _ in range(rng.randint(4, 14))) for _ in range(rng.randint(200, 20000))]
    data = ('\n'.join(lines) + '\n').encode()
    sub = os.path.join(out, f'd{i % 37}')
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f'doc{i}.txt'), 'wb') as f:
        f.write(data)
    written += len(data); i += 1
PY
  local want=$((mb * 4 / 10 * 1024 * 1024)) have=0 n=0
  while [ "$have" -lt "$want" ]; do
    for f in /usr/bin/* /usr/lib/x86_64-linux-gnu/*.so*; do
      [ -f "$f" ] && [ ! -L "$f" ] || continue
      cp "$f" "$dir/bin/$n-$(basename "$f")"; n=$((n + 1))
      have=$((have + $(stat -c %s "$f")))
      [ "$have" -ge "$want" ] && break
    done
  done
  local rnd=$((mb * 2 / 10)) k=0
  while [ "$rnd" -gt 0 ]; do
    local chunk=$(( rnd > 50 ? 50 : rnd ))
    head -c $((chunk * 1024 * 1024)) /dev/urandom > "$dir/random/r$k.bin"
    rnd=$((rnd - chunk)); k=$((k + 1))
  done
}

calc() { awk "BEGIN { print $1 }"; }

measure() { # measure LABEL CMD... -> prints "LABEL wall_s peak_rss_kib"
  local label=$1; shift
  sync
  /usr/bin/time -f "%e %M" -o "$work/time.out" "$@" >/dev/null
  echo "$label $(cat "$work/time.out")"
}


# The devnet benches: release binaries of every daemon, in $R.
devnet_build() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
  cargo build --release --quiet -p bitdust-devnet -p bitdustctl -p bitdust-supplier-store \
    -p bitdust-customer-agent -p bitdust-dht-peer -p bitdust-rebuilder
  R="$CARGO_TARGET_DIR/release"
}

# Starts `bitdust-devnet up --suppliers N` in DIR (its pid in $devnet_pid)
# and waits until it is up; the customer's sockets go into $BITDUST_RUN_DIR.
devnet_up() { # devnet_up DIR N [BLOCK_MIB]
  "$R/bitdust-devnet" up --dir "$1" --suppliers "$2" --block-mib "${3:-1}" >/dev/null &
  devnet_pid=$!
  for _ in $(seq 600); do [ -f "$1/devnet.env" ] && break; sleep 0.1; done
  export BITDUST_RUN_DIR="$1/nodes/customer/run"
}
