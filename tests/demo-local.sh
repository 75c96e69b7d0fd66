#!/usr/bin/env bash
# The main job, offline: back a sample tree up to 7 local "supplier"
# directories (twice: the second snapshot stores nothing new; then a
# third after a change), list, diff, forget all but the newest and prune, stats and
# check; lose 3 of them (the 7-supplier ECC map's tolerance), verify,
# restore, and check the restore is bit-exact.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --quiet -p bitdustctl
ctl="$CARGO_TARGET_DIR/debug/bitdustctl"

work=$(mktemp -d /tmp/bitdust-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
export BITDUST_KEYS="$work/keys"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

# A sample tree: this repository's sources and docs, a random binary, an
# empty directory, a symlink and a non-UTF-8 name.
src="$work/sample"
mkdir -p "$src/empty"
cp -r proto libs docs README.md "$src/"
head -c 3000000 /dev/urandom > "$src/random.bin"
ln -s README.md "$src/link-to-readme"
printf 'latin-1 name\n' > "$src/$(printf 'caf\xe9.txt')"

say bitdustctl local backup "$src" --to "$work/suppliers" --suppliers 7 --block-size 256K
"$ctl" local backup "$src" --to "$work/suppliers" --suppliers 7 --block-size 256K

say "bitdustctl local backup $src --to $work/suppliers --suppliers 7 --block-size 256K   # again: nothing new"
"$ctl" local backup "$src" --to "$work/suppliers" --suppliers 7 --block-size 256K

say "echo a change >> sample/README.md; bitdustctl local backup ...   # a third snapshot"
echo "a change" >> "$src/README.md"
"$ctl" local backup "$src" --to "$work/suppliers" --block-size 256K

say bitdustctl local list "$work/suppliers"
"$ctl" local list "$work/suppliers"
id=$("$ctl" local list "$work/suppliers" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["backup_id"])')

say bitdustctl local diff "$work/suppliers" "$id@2" "$id@3"
"$ctl" local diff "$work/suppliers" "$id@2" "$id@3"

say bitdustctl local forget "$work/suppliers" --keep-last 1 --prune --grace 0h
"$ctl" local forget "$work/suppliers" --keep-last 1 --prune --grace 0h

say bitdustctl local stats "$work/suppliers"
"$ctl" local stats "$work/suppliers"

say bitdustctl local check "$work/suppliers" --read-data-subset 100%
"$ctl" local check "$work/suppliers" --read-data-subset 100%

say ls "$work/suppliers"
ls "$work/suppliers"

say "rm -rf suppliers/1 suppliers/4 suppliers/6   # lose 3 of 7 suppliers"
rm -rf "$work/suppliers/1" "$work/suppliers/4" "$work/suppliers/6"

say bitdustctl local verify "$work/suppliers"
# Exit status 4: fragments are lost, but every block can still be recovered.
"$ctl" local verify "$work/suppliers" || [ $? -eq 4 ]

say bitdustctl local restore "$work/suppliers" --to "$work/restored"
"$ctl" local restore "$work/suppliers" --to "$work/restored"

say diff -r "$src" "$work/restored$src"
diff -r --no-dereference "$src" "$work/restored$src"
echo "demo: restore is bit-exact after losing 3 of 7 suppliers"
