# %pre of the secretsync RPM. $1: 1 = install, 2 = upgrade.
#
# Creates the secretsync system group and user before the files are unpacked
# (agent.yaml and /etc/secretsync belong to group secretsync in the package),
# the way Fedora's %sysusers_create_package and %sysusers_create_compat do:
#   - systemd-sysusers with the line of /usr/lib/sysusers.d/secretsync.conf
#     (packaging/rpm/secretsync.sysusers; that file is not on disk yet during
#     %pre, hence the copy on stdin and --replace, systemd >= 238);
#   - else groupadd/useradd (shadow-utils, which the package requires).
# Existing accounts are left as they are. RPM >= 4.19 creates both itself from
# the package's user()/group() provides before %pre; this is a no-op then.
# Failing here leaves the package uninstalled, which beats a unit that cannot
# start for want of its user.

if command -v systemd-sysusers >/dev/null 2>&1; then
    # --replace reads every sysusers.d file (an admin's
    # /etc/sysusers.d/secretsync.conf wins) and so may report other accounts
    # it adds: stdout is dropped, errors stay visible.
    systemd-sysusers --replace=/usr/lib/sysusers.d/secretsync.conf - >/dev/null <<'SYSUSERS'
u secretsync - "secretsync agent" /var/lib/secretsync
SYSUSERS
else
    getent group secretsync >/dev/null || groupadd -r secretsync
    getent passwd secretsync >/dev/null ||
        useradd -r -g secretsync -d /var/lib/secretsync -M -s /usr/sbin/nologin \
            -c "secretsync agent" secretsync
fi
if ! getent group secretsync >/dev/null || ! getent passwd secretsync >/dev/null; then
    echo "secretsync: could not create the secretsync system user and group" >&2
    exit 1
fi
exit 0
