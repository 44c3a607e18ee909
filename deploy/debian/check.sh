#!/usr/bin/env bash
# Builds the Debian package, installs it on this host (root), checks what
# an operator gets, and purges it again:
#  - the binary runs and its default configuration passes config-check;
#  - the units are installed where systemd looks and verify cleanly;
#  - examples, prompts, dashboard and documentation are in place, the
#    configuration files are conffiles owned by root:rvoip, mode 0640;
#  - the service user and /var/lib/rvoip exist, and go on purge.
# usage: deploy/debian/check.sh [cargo deb options, e.g. --profile dev]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
deploy/debian/build.sh "$@"
deb=$(ls -t target/debian/rvoip_*.deb | head -1)
echo "package: $deb"
dpkg-deb --info "$deb" | grep -E "Package|Version|Depends|Section"
fail() { echo "check failed: $*" >&2; dpkg --purge rvoip >/dev/null 2>&1 || true; exit 1; }
contents=$(dpkg-deb --contents "$deb")
for f in ./usr/bin/rvoip ./lib/systemd/system/rvoip.service ./lib/systemd/system/rvoip-dataplane.service \
         ./lib/systemd/system/rvoip-controlplane.service ./etc/rvoip/rvoip.toml ./etc/rvoip/users.toml \
         ./usr/share/rvoip/examples/sbc.toml ./usr/share/rvoip/prompts/welcome.wav \
         ./usr/share/rvoip/grafana/rvoip.json ./usr/share/doc/rvoip/OPERATIONS.md; do
    grep -q " $f\$" <<<"$contents" || fail "$f is not in the package"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -q /etc/rvoip/rvoip.toml || fail "rvoip.toml is not a conffile"
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/dev/null || { apt-get install -f -y -qq >/dev/null; dpkg -i "$deb" >/dev/null; } || fail "dpkg -i"
getent passwd rvoip >/dev/null || fail "no rvoip user"
[ "$(stat -c %U:%G:%a /etc/rvoip/rvoip.toml)" = root:rvoip:640 ] || fail "/etc/rvoip/rvoip.toml is $(stat -c %U:%G:%a /etc/rvoip/rvoip.toml)"
[ "$(stat -c %U:%G /var/lib/rvoip)" = rvoip:rvoip ] || fail "/var/lib/rvoip is not the service user's"
/usr/bin/rvoip --version
/usr/bin/rvoip config-check /etc/rvoip/rvoip.toml || fail "the packaged configuration does not pass config-check"
grep -q '^state_dir = "/var/lib/rvoip"' /etc/rvoip/rvoip.toml || fail "state_dir is not /var/lib/rvoip"
out=$(systemd-analyze verify /lib/systemd/system/rvoip.service /lib/systemd/system/rvoip-dataplane.service \
      /lib/systemd/system/rvoip-controlplane.service 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"
dpkg --purge rvoip >/dev/null || fail "dpkg --purge"
[ ! -e /var/lib/rvoip ] || fail "/var/lib/rvoip left after purge"
! getent passwd rvoip >/dev/null || fail "rvoip user left after purge"
[ ! -e /usr/bin/rvoip ] || fail "/usr/bin/rvoip left after purge"
echo "package check: ok ($deb)"
