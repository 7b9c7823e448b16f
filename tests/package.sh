#!/usr/bin/env bash
# The Debian package, installed without systemd and without touching the host: run by
# tests/package.rs as `unshare --mount bash tests/package.sh DEB WORK` (root, a private mount
# namespace). The host's /etc, /var/lib and /usr/bin get overlays that exist only in this
# namespace; the package's own postinst makes the user and fixes ownership there; the daemon then
# runs as that user, as the unit would start it.
set -euo pipefail
deb=$1
work=$2
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# 1. Modes and owners as packaged, and the configuration as a conffile.
listing=$(dpkg-deb -c "$deb")
entry() {
  grep -qE "^$1 0/0 +[0-9]+ [0-9-]+ [0-9:]+ \./$2\$" <<<"$listing" ||
    fail "archive: ./$2 is not $1 root:root:"$'\n'"$listing"
}
entry '-rwxr-xr-x' 'usr/bin/twinloom'
entry '-rw-r-----' 'etc/twinloom/twinloom.toml'
entry '-rw-r--r--' 'lib/systemd/system/twinloom.service'
dpkg-deb -I "$deb" conffiles | grep -qx /etc/twinloom/twinloom.toml ||
  fail "/etc/twinloom/twinloom.toml is not a conffile"

# 2. Unpack, and overlay the package's files on the host's in this namespace only.
root=$work/root
dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$work/control"
overlay() { # overlay TARGET LOWER...: writable, changes go to $work/upper/TARGET
  local target=$1 lower=$2 name
  name=$(tr / _ <<<"$target")
  mkdir -p "$work/upper/$name" "$work/work/$name"
  mount -t overlay overlay \
    -o "lowerdir=$lower,upperdir=$work/upper/$name,workdir=$work/work/$name" "$target"
}
overlay /etc "$root/etc:/etc"
overlay /var/lib /var/lib
overlay /usr/bin "$root/usr/bin:/usr/bin"

# 3. The maintainer script, for real: user, group, ownership, state folder.
sh "$work/control/postinst" configure
sh "$work/control/postinst" configure # upgrades run it again
getent passwd twinloom >/dev/null || fail "postinst made no user twinloom"
id -nG twinloom | tr ' ' '\n' | grep -qx dialout || fail "twinloom is not in group dialout"
owner() {
  local got
  got=$(stat -c '%U:%G %a' "$1")
  [ "$got" = "$2" ] || fail "$1 is $got, expected $2"
}
owner /etc/twinloom 'root:twinloom 750'
owner /etc/twinloom/twinloom.toml 'root:twinloom 640'
owner /var/lib/twinloom 'twinloom:twinloom 750'

# 4. As the unit's user (User=twinloom, SupplementaryGroups=dialout): the shipped example checks.
as_unit() { setpriv --reuid=twinloom --regid=twinloom --init-groups "$@"; }
as_unit /usr/bin/twinloom check /etc/twinloom/twinloom.toml ||
  fail "the unit's user cannot check the packaged configuration"
if setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/twinloom check \
  /etc/twinloom/twinloom.toml 2>/dev/null; then
  fail "any user can read the configuration"
fi

# 5. ... and runs: a configuration on loopback only (the example's PLCs are not here), the OPC UA
# server making its PKI in the state folder as it would under StateDirectory=.
cat >/etc/twinloom/twinloom.toml <<'CONFIG'
[opcua_server]
listen = "127.0.0.1:0"

[admin_http]
listen = "127.0.0.1:0"
CONFIG
owner /etc/twinloom/twinloom.toml 'root:twinloom 640'
log=$work/run.log
# setpriv and env exec: $! is the daemon itself.
setpriv --reuid=twinloom --regid=twinloom --init-groups \
  env STATE_DIRECTORY=/var/lib/twinloom /usr/bin/twinloom run /etc/twinloom/twinloom.toml 2>"$log" &
daemon=$!
for _ in $(seq 600); do
  grep -q "Twinloom started" "$log" && break
  kill -0 "$daemon" 2>/dev/null || break
  sleep 0.1
done
grep -q "Twinloom started" "$log" || fail "the daemon did not start as the unit's user:"$'\n'"$(cat "$log")"
kill -TERM "$daemon"
status=0
wait "$daemon" || status=$?
[ "$status" = 0 ] || fail "the daemon exited with $status on SIGTERM:"$'\n'"$(cat "$log")"
[ -n "$(find /var/lib/twinloom -user twinloom -name '*.pem' -print -quit)" ] ||
  fail "no PKI of the unit's user in /var/lib/twinloom"
owner /var/lib/twinloom 'twinloom:twinloom 750'

# 6. The unit as systemd reads it (its binary now exists at /usr/bin/twinloom).
systemd-analyze verify "$root/lib/systemd/system/twinloom.service" ||
  fail "systemd-analyze verify rejects the unit"
echo "package: layout, postinst, check and run as the unit's user, unit verified"
