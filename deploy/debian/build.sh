#!/usr/bin/env bash
# Builds the Debian package of rvoip (cargo-deb; `cargo install cargo-deb`):
# the binary, the systemd units, /etc/rvoip/rvoip.toml (config/rvoip.toml
# with its paths made absolute for the service: state in /var/lib/rvoip,
# prompts in /usr/share/rvoip/prompts), the users file, every example
# configuration, the prompts, the Grafana dashboard and the documentation.
# usage: deploy/debian/build.sh [--profile dev]   (default: release)
# The package is written to target/debian/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ASSETS=target/deb-assets
rm -rf "$ASSETS"; mkdir -p "$ASSETS"
sed -e 's#^state_dir = "../state"#state_dir = "/var/lib/rvoip"#' \
    -e 's#^dir = "../recordings"#dir = "/var/lib/rvoip/recordings"#' \
    -e 's#^prompt_dir = "../prompts"#prompt_dir = "/usr/share/rvoip/prompts"#' \
    config/rvoip.toml > "$ASSETS/rvoip.toml"
for k in 'state_dir = "/var/lib/rvoip"' 'prompt_dir = "/usr/share/rvoip/prompts"'; do
    grep -q "^$k" "$ASSETS/rvoip.toml" || { echo "config/rvoip.toml has no ${k%% *} to rewrite" >&2; exit 1; }
done
cargo deb -p rvoip-controlplane --locked "$@"
