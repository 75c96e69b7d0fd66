#!/usr/bin/env bash
# Builds the .rpm named bitdust: `bash packaging/rpm/build.sh` (needs
# cargo-generate-rpm: cargo install --locked cargo-generate-rpm). Release
# binaries are built, stripped copies and gzipped man pages go to
# TARGET/stripped/, and cargo-generate-rpm packs them with the units, man
# pages, completions, protos and the default config (%config(noreplace))
# listed in bins/bitdustctl/Cargo.toml. The package lands in
# TARGET/generate-rpm/.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
# The same build as cargo deb's, so after it this is a no-op.
cargo build --release --locked --workspace --bin=bitdustctl --bin=bitdust-dht-peer \
    --bin=bitdust-supplier-store --bin=bitdust-customer-agent --bin=bitdust-rebuilder
mkdir -p "$target/stripped/man"
for page in man/*.1 man/*.5; do
    gzip -9n <"$page" >"$target/stripped/$page.gz"
done
for b in bitdustctl bitdust-dht-peer bitdust-supplier-store bitdust-customer-agent bitdust-rebuilder; do
    objcopy --strip-all "$target/release/$b" "$target/stripped/$b"
done
cargo generate-rpm -p bins/bitdustctl --profile stripped --target-dir "$target" "$@"
ls "$target"/generate-rpm/bitdust-*.rpm
