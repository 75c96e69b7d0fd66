#!/usr/bin/env bash
# Builds the .rpm named bitdust: `bash packaging/rpm/build.sh` (needs
# cargo-generate-rpm: cargo install --locked cargo-generate-rpm). Release
# binaries are built (a no-op after `cargo deb`), stripped copies go to
# TARGET/stripped/, and cargo-generate-rpm packs them with the units, man
# pages, completions, protos and the default config (%config(noreplace))
# listed in bins/bitdustctl/Cargo.toml. The package lands in
# TARGET/generate-rpm/.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked -p bitdustctl -p bitdust-dht-peer -p bitdust-supplier-store \
    -p bitdust-customer-agent -p bitdust-rebuilder
mkdir -p "$target/stripped"
for b in bitdustctl bitdust-dht-peer bitdust-supplier-store bitdust-customer-agent bitdust-rebuilder; do
    objcopy --strip-all "$target/release/$b" "$target/stripped/$b"
done
cargo generate-rpm -p bins/bitdustctl --profile stripped --target-dir "$target" "$@"
ls "$target"/generate-rpm/bitdust-*.rpm
