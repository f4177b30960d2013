#!/usr/bin/env bash
# Runs the RPM scriptlets in DIR (pre.sh, post.sh, preun.sh, postun.sh) in the
# order rpm runs them, with every command that would touch the host
# (systemd-sysusers, getent, groupadd, useradd, install, chown, chmod, rmdir,
# systemctl) replaced by stubs that record their arguments. PATH holds only
# the stubs, so a scriptlet calling anything else fails the test. The
# directories %post and %postun make or remove (/etc/secretsync,
# /var/lib/secretsync) are rewritten to a throwaway root first (test-only).
# Each scenario runs under every shell found of dash and bash (RHEL's /bin/sh
# is bash). Then checks what the scriptlets did:
#   install (systemd-sysusers): user created from the sysusers.d line, dirs
#                    made, owners and modes set, preset run, nothing enabled
#                    or started;
#   install (no systemd-sysusers): groupadd/useradd fallback;
#   upgrade:         nothing created twice, no preset, daemon-reload and
#                    try-restart;
#   erase:           disable and stop; state, config leftovers and the user
#                    kept; /etc/secretsync removed only if empty;
#   broken useradd:  %pre fails (rpm then leaves the package uninstalled).
#
# Usage: packaging/rpm/test-scriptlets.sh DIR [SYSUSERS_CONF]
#   DIR = packaging/rpm (sources) or scriptlets extracted from a built .rpm
#   under the same names; SYSUSERS_CONF defaults to
#   packaging/rpm/secretsync.sysusers (what %pre must feed systemd-sysusers).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$(cd "${1:?usage: $0 DIR [SYSUSERS_CONF]}" && pwd)"
sysusers_conf="${2:-$here/secretsync.sysusers}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

fail() {
    echo "rpm scriptlets: FAIL [$scenario, $shell_name]: $*" >&2
    if [ -f "$log" ]; then
        echo "--- calls:" >&2
        cat "$log" >&2
    fi
    exit 1
}
scenario="syntax"
shell_name="sh"
log="$work/none"

for s in pre post preun postun; do
    [ -f "$dir/$s.sh" ] || fail "no $s.sh in $dir"
    sh -n "$dir/$s.sh" || fail "$s.sh: syntax"
done
expected_line="$(grep -v '^[[:space:]]*\(#\|$\)' "$sysusers_conf")"
[ "$(wc -l <<<"$expected_line")" = 1 ] || fail "$sysusers_conf: expected exactly one sysusers line"

shells=()
for s in dash bash; do
    if p="$(command -v "$s")"; then shells+=("$p"); fi
done
[ ${#shells[@]} -gt 0 ] || fail "neither dash nor bash found"

# setup SYSUSERS(yes|no) USERADD(ok|broken): fresh root, db, stubs, log.
setup() {
    rm -rf "$work/run"
    root="$work/run/root"
    stubs="$work/run/stubs"
    db="$work/run/db"
    log="$work/run/calls.log"
    mkdir -p "$root/etc/secretsync" "$root/var/lib" "$stubs" "$db" "$work/run/scripts"
    : >"$db/passwd"
    : >"$db/group"
    : >"$log"
    # %post and %postun with the directories they make or remove moved under
    # the throwaway root; %pre names /var/lib/secretsync only as the home
    # directory (a string), so it runs unchanged.
    for s in pre preun; do
        cp "$dir/$s.sh" "$work/run/scripts/$s.sh"
    done
    for s in post postun; do
        sed -e "s|/etc/secretsync|$root/etc/secretsync|g" \
            -e "s|/var/lib/secretsync|$root/var/lib/secretsync|g" \
            "$dir/$s.sh" >"$work/run/scripts/$s.sh"
    done
    # rpm puts agent.yaml (and so /etc/secretsync) in place before %post.
    echo "config" >"$root/etc/secretsync/agent.yaml"

    stub() { # NAME BODY: logs "NAME args", then runs BODY (absolute paths only)
        printf '#!/bin/sh\necho "%s $*" >>"%s"\n%s\n' "$1" "$log" "$2" >"$stubs/$1"
        chmod +x "$stubs/$1"
    }
    stub getent "/bin/grep -q \"^\$2:\" \"$db/\$1\""
    stub groupadd 'for a; do n=$a; done; echo "$n:x:990:" >>"'"$db"'/group"'
    if [ "$2" = ok ]; then
        stub useradd 'for a; do n=$a; done; echo "$n:x:990:990::/var/lib/secretsync:/usr/sbin/nologin" >>"'"$db"'/passwd"'
    else
        stub useradd 'exit 1'
    fi
    if [ "$1" = yes ]; then
        # Records stdin; creates the "u" line's user and its group.
        stub systemd-sysusers '/bin/cat >"'"$work"'/run/sysusers.stdin"
set -- $(/bin/grep -v "^#" "'"$work"'/run/sysusers.stdin")
if [ "$1" = u ]; then
    /bin/grep -q "^$2:" "'"$db"'/group" || echo "$2:x:990:" >>"'"$db"'/group"
    /bin/grep -q "^$2:" "'"$db"'/passwd" || echo "$2:x:990:990::/var/lib/secretsync:/usr/sbin/nologin" >>"'"$db"'/passwd"
fi'
    fi
    stub install 'for a; do last=$a; done; /bin/mkdir -p "$last"'
    stub chown ''
    stub chmod ''
    stub rmdir '/bin/rmdir "$@"'
    stub systemctl ''
}

run() { # SCRIPTLET ARG: one scriptlet, as rpm runs it (sh FILE ARG)
    echo "## $1 $2" >>"$log"
    PATH="$stubs" "$shell" "$work/run/scripts/$1.sh" "$2" >>"$log" 2>&1
}
must() { # SCRIPTLET ARG: run, fail on a non-zero exit
    run "$@" || fail "$1 $2 exited $?"
}
calls_since() { # MARKER: the calls after the last "## MARKER" line
    awk -v m="## $1" 'index($0, m) == 1 { buf = ""; on = 1; next } /^## / { on = 0 } on { buf = buf $0 "\n" } END { printf "%s", buf }' "$log"
}
expect_call() { # MARKER REGEX WHAT
    grep -Eq "$2" <<<"$(calls_since "$1")" || fail "$1: $3"
}
expect_no_call() { # MARKER REGEX WHAT
    ! grep -Eq "$2" <<<"$(calls_since "$1")" || fail "$1: $3"
}
never() { # REGEX WHAT: in no scriptlet of the scenario
    ! grep -Eq "$1" "$log" || fail "$2"
}

for shell in "${shells[@]}"; do
    shell_name="$(basename "$shell")"

    # --- fresh install, systemd-sysusers present (AL2023, RHEL 9) ---------
    scenario="install"
    setup yes ok
    must pre 1
    must post 1
    expect_call "pre 1" '^systemd-sysusers --replace=/usr/lib/sysusers\.d/secretsync\.conf -$' \
        "systemd-sysusers not called with --replace=/usr/lib/sysusers.d/secretsync.conf -"
    [ "$(cat "$work/run/sysusers.stdin")" = "$expected_line" ] ||
        fail "%pre feeds systemd-sysusers '$(cat "$work/run/sysusers.stdin")', the sysusers.d file says '$expected_line'"
    expect_no_call "pre 1" '^(useradd|groupadd) ' "fell back to useradd/groupadd although systemd-sysusers exists"
    grep -q '^secretsync:' "$db/passwd" || fail "user secretsync not created"
    grep -q '^secretsync:' "$db/group" || fail "group secretsync not created"
    expect_call "post 1" "^chown root:secretsync $root/etc/secretsync\$" "/etc/secretsync not chowned root:secretsync"
    expect_call "post 1" "^chmod 0750 $root/etc/secretsync\$" "/etc/secretsync not chmod 0750"
    expect_call "post 1" "^install -d -o secretsync -g secretsync -m 0700 $root/var/lib/secretsync\$" \
        "/var/lib/secretsync not created secretsync:secretsync 0700"
    [ -d "$root/var/lib/secretsync" ] || fail "/var/lib/secretsync missing"
    expect_call "post 1" '^systemctl --no-reload preset secretsync\.service$' "no systemctl preset on install"
    never '^systemctl .*(enable|start|restart|reload-or-restart) ' "a scriptlet enables or starts the unit on install"

    # --- upgrade: new pre/post 2, old preun/postun 1 -------------------------
    scenario="upgrade"
    echo "state" >"$root/var/lib/secretsync/marker"
    must pre 2
    must post 2
    must preun 1
    must postun 1
    expect_no_call "post 2" '^(chown|chmod|install) ' "upgrade resets /etc/secretsync or /var/lib/secretsync"
    expect_no_call "post 2" '^systemctl ' "upgrade runs systemctl in %post (preset would undo an admin's enable/disable)"
    expect_no_call "preun 1" '^systemctl ' "upgrade stops or disables the unit in %preun"
    expect_call "postun 1" '^systemctl daemon-reload$' "no daemon-reload after upgrade"
    expect_call "postun 1" '^systemctl try-restart secretsync\.service$' "no try-restart after upgrade"
    expect_no_call "postun 1" '^systemctl (start|restart|enable) ' "upgrade starts or enables the unit"
    [ "$(grep -c '^secretsync:' "$db/passwd")" = 1 ] || fail "user created twice"
    [ -f "$root/var/lib/secretsync/marker" ] || fail "upgrade lost state"

    # --- erase -----------------------------------------------------------------
    scenario="erase"
    # rpm removes agent.yaml before %postun (an edited one becomes .rpmsave).
    mv "$root/etc/secretsync/agent.yaml" "$root/etc/secretsync/agent.yaml.rpmsave"
    must preun 0
    must postun 0
    expect_call "preun 0" '^systemctl --no-reload disable secretsync\.service$' "erase does not disable the unit"
    expect_call "preun 0" '^systemctl stop secretsync\.service$' "erase does not stop the agent"
    expect_no_call "postun 0" '^systemctl try-restart ' "erase restarts the agent"
    never '^(userdel|groupdel|deluser) ' "erase deletes the user or group"
    [ -f "$root/var/lib/secretsync/marker" ] || fail "erase deleted /var/lib/secretsync"
    [ -f "$root/etc/secretsync/agent.yaml.rpmsave" ] || fail "erase deleted agent.yaml.rpmsave"
    # Nothing left: /etc/secretsync goes.
    rm "$root/etc/secretsync/agent.yaml.rpmsave"
    echo "## again" >>"$log"
    must postun 0
    [ ! -d "$root/etc/secretsync" ] || fail "empty /etc/secretsync kept after erase"

    # --- fresh install without systemd-sysusers (shadow-utils fallback) -------
    scenario="install, no systemd-sysusers"
    setup no ok
    must pre 1
    expect_call "pre 1" '^groupadd -r secretsync$' "no groupadd -r secretsync"
    expect_call "pre 1" '^useradd -r -g secretsync -d /var/lib/secretsync -M -s /usr/sbin/nologin -c secretsync agent secretsync$' \
        "useradd not called as expected"
    must pre 2
    expect_no_call "pre 2" '^(useradd|groupadd) ' "fallback creates the user twice"

    # --- user creation fails -> %pre fails --------------------------------------
    scenario="broken useradd"
    setup no broken
    if run pre 1; then fail "%pre succeeded although the user could not be created"; fi
    grep -q 'could not create the secretsync system user' "$log" || fail "%pre failed without saying why"
done

echo "rpm scriptlets: OK (${shells[*]##*/})"
