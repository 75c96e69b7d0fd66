#!/usr/bin/env bash
# Checks the .rpm holds the same files as the .deb (rpm -qlp against
# dpkg-deb -c), apart from where each distribution wants a file:
#   zsh completions: Debian /usr/share/zsh/vendor-completions,
#                    Fedora /usr/share/zsh/site-functions;
#   /usr/share/doc/bitdust/{copyright,changelog.Debian.gz} and the lintian
#   overrides: Debian's policy files, .deb only.
#   bash tests/install/package-lists.sh [DEB] [RPM]
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
deb="${1:-$(ls -t "$target"/debian/bitdust_*_amd64.deb | head -1)}"
rpm="${2:-$(ls -t "$target"/generate-rpm/bitdust-*.rpm | head -1)}"
command -v rpm >/dev/null || { echo "package-lists: rpm is missing; apt-get install rpm" >&2; exit 2; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\./|/|' |
    grep -vxE '/usr/share/doc/bitdust/(copyright|changelog\.Debian\.gz)|/usr/share/lintian/overrides/bitdust' |
    sed 's|^/usr/share/zsh/vendor-completions/|/usr/share/zsh/site-functions/|' | sort >"$tmp/deb"
rpm -qlp "$rpm" 2>/dev/null | sort >"$tmp/rpm"
if ! diff -u "$tmp/deb" "$tmp/rpm"; then
    echo "package-lists: $(basename "$rpm") and $(basename "$deb") hold different files (see the diff above)" >&2
    exit 1
fi
for f in /usr/bin/bitdustctl /usr/lib/systemd/system/bitdust-supplier.service /usr/share/man/man1/bitdustctl.1.gz \
    /usr/share/man/man5/bitdust.toml.5.gz /etc/bitdust/bitdust.toml /usr/lib/sysusers.d/bitdust.conf; do
    grep -qx "$f" "$tmp/rpm" || { echo "package-lists: $f is missing from both packages" >&2; exit 1; }
done
rpm -qp --configfiles "$rpm" 2>/dev/null | grep -qx /etc/bitdust/bitdust.toml ||
    { echo "package-lists: /etc/bitdust/bitdust.toml is not a %config file in the .rpm" >&2; exit 1; }
rpm -qp --scripts "$rpm" 2>/dev/null | grep -q systemd-sysusers ||
    { echo "package-lists: the .rpm's %post does not create the user bitdust" >&2; exit 1; }
echo "package-lists: $(wc -l <"$tmp/rpm") files, the same in $(basename "$deb") and $(basename "$rpm")"
