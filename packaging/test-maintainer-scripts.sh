#!/usr/bin/env bash
# Runs the Debian maintainer scripts in DIR (postinst, postrm; prerm if
# present) against a throwaway DPKG_ROOT, with every command that would touch
# the host (adduser, addgroup, getent, dpkg-statoverride, install -o,
# deb-systemd-helper, deb-systemd-invoke, systemctl) replaced by stubs that
# record their arguments. Then checks what the scripts did:
#   fresh install:   user and group created, overrides added, state dir made,
#                    nothing enabled or started;
#   second configure (upgrade): nothing created twice;
#   remove:          state kept;
#   purge:           state and overrides gone, user kept.
#
# Usage: packaging/test-maintainer-scripts.sh DIR
#   DIR = packaging/debian (source scripts) or the control directory of a
#   built .deb (`dpkg-deb -e`), where cargo-deb has filled in #DEBHELPER#.
set -euo pipefail

dir="$(cd "${1:?usage: $0 DIR}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

root="$work/root"
stubs="$work/stubs"
log="$work/calls.log"
db="$work/db"
mkdir -p "$root/etc/secretsync" "$stubs" "$db"
: >"$log"
: >"$db/passwd"
: >"$db/group"
: >"$db/statoverride"

fail() {
    echo "maintainer scripts: FAIL: $*" >&2
    echo "--- calls:" >&2
    cat "$log" >&2
    exit 1
}

stub() { # NAME BODY: a stub that logs "NAME args" and then runs BODY
    printf '#!/bin/sh\necho "%s $*" >>"%s"\n%s\n' "$1" "$log" "$2" >"$stubs/$1"
    chmod +x "$stubs/$1"
}
stub getent "grep -q \"^\$2:\" \"$db/\$1\""
stub addgroup 'for a; do n=$a; done; echo "$n:x:999:" >>"'"$db"'/group"'
stub adduser 'for a; do n=$a; done; echo "$n:x:999:999::/var/lib/secretsync:/usr/sbin/nologin" >>"'"$db"'/passwd"'
stub deluser ''
stub dpkg-statoverride '
case "$1" in
--list) grep -q " $2\$" "'"$db"'/statoverride" ;;
--update) shift; shift; echo "$*" >>"'"$db"'/statoverride" ;;
--remove) grep -v " $2\$" "'"$db"'/statoverride" >"'"$db"'/so.tmp" || true; mv "'"$db"'/so.tmp" "'"$db"'/statoverride" ;;
esac'
# install -d -o USER ...: the user does not exist on this host; make the dir.
stub install 'for a; do last=$a; done; mkdir -p "$last"'
stub deb-systemd-helper 'case "$1" in debian-installed|was-enabled|--quiet) exit 1 ;; esac; exit 0'
stub deb-systemd-invoke ''
stub systemctl ''
stub systemd-tmpfiles ''

run() { # SCRIPT ARGS...
    local script="$dir/$1"
    shift
    [ -f "$script" ] || return 0
    echo "## $(basename "$script") $*" >>"$log"
    PATH="$stubs:$PATH" DPKG_ROOT="$root" DPKG_MAINTSCRIPT_PACKAGE=secretsync \
        sh -e "$script" "$@" >>"$log" 2>&1 || fail "$(basename "$script") $* exited $?"
}

calls_since() { # MARKER: the log after the last "## MARKER" line
    awk -v m="## $1" 'index($0, m) == 1 { buf = ""; on = 1; next } on { buf = buf $0 "\n" } END { printf "%s", buf }' "$log"
}

for s in postinst postrm; do
    [ -f "$dir/$s" ] || fail "no $s in $dir"
    sh -n "$dir/$s" || fail "$s: syntax"
done
for s in preinst prerm; do
    if [ -f "$dir/$s" ]; then sh -n "$dir/$s" || fail "$s: syntax"; fi
done

# Fresh install.
run postinst configure
fresh="$(calls_since "postinst configure")"
grep -q '^addgroup --system.* secretsync$' <<<"$fresh" || fail "group not created"
grep -q '^adduser --system.*--ingroup secretsync.*--home /var/lib/secretsync.* secretsync$' <<<"$fresh" ||
    fail "user not created as a system user with home /var/lib/secretsync"
grep -q '^dpkg-statoverride --update --add root secretsync 0640 /etc/secretsync/agent.yaml$' <<<"$fresh" ||
    fail "agent.yaml not made root:secretsync 0640"
grep -q '^dpkg-statoverride --update --add root secretsync 0750 /etc/secretsync$' <<<"$fresh" ||
    fail "/etc/secretsync not made root:secretsync 0750"
grep -q "^install -d -o secretsync -g secretsync -m 0700 $root/var/lib/secretsync\$" <<<"$fresh" ||
    fail "state dir not created 0700 secretsync"
[ -d "$root/var/lib/secretsync" ] || fail "state dir missing"
if grep -Eq '^(systemctl (enable|start)|deb-systemd-invoke (start|restart)|deb-systemd-helper enable)' <<<"$fresh"; then
    fail "a fresh install enabled or started the unit"
fi

# Upgrade: configure again with the old version; nothing is created twice.
run postinst configure 0.0.9
again="$(calls_since "postinst configure 0.0.9")"
if grep -Eq '^(adduser|addgroup|dpkg-statoverride --update)' <<<"$again"; then
    fail "upgrade re-created the user or the overrides"
fi
if grep -Eq '^(systemctl (enable|start)|deb-systemd-invoke start|deb-systemd-helper enable)' <<<"$again"; then
    fail "an upgrade enabled or started the unit"
fi

# Remove keeps config overrides and state.
run prerm remove
run postrm remove
[ -d "$root/var/lib/secretsync" ] || fail "remove deleted the state dir"

# Purge: state and overrides go, the user stays.
touch "$root/var/lib/secretsync/state.json"
run postrm purge
purge="$(calls_since "postrm purge")"
[ ! -e "$root/var/lib/secretsync" ] || fail "purge left /var/lib/secretsync"
[ ! -e "$root/etc/secretsync" ] || fail "purge left an empty /etc/secretsync"
[ ! -s "$db/statoverride" ] || fail "purge left overrides: $(cat "$db/statoverride")"
if grep -Eq '^(deluser|userdel|delgroup|groupdel)' <<<"$purge"; then
    fail "purge removed the user (documented choice: keep it)"
fi

# Purge keeps what the admin put into /etc/secretsync (dpkg makes the
# directory on unpack; the scripts never create it).
mkdir -p "$root/etc/secretsync"
run postinst configure
echo "[profile x]" >"$root/etc/secretsync/aws-config"
run postrm purge
[ -f "$root/etc/secretsync/aws-config" ] || fail "purge deleted an admin file in /etc/secretsync"

echo "maintainer scripts OK ($dir)"
