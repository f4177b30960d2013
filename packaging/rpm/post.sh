# %post of the secretsync RPM. $1: 1 = install, 2 = upgrade.
#
# Same directories and modes as packaging/debian/postinst (cargo-generate-rpm
# cannot put owned directories into the package, so they are made here):
#   - /etc/secretsync root:secretsync 0750 (agent.yaml itself is
#     root:secretsync 0640 in the package). Only on the first install: later
#     changes are the admin's and upgrades keep them (rpm does not touch a
#     directory it does not own);
#   - /var/lib/secretsync secretsync:secretsync 0700 if missing. systemd makes
#     it too (StateDirectory=); doing it here lets
#     `sudo -u secretsync secretsync sync` work before the first start.
# The unit: `systemctl preset` on the first install, as Fedora's %systemd_post
# does. The package's own 90-secretsync.preset says "disable", so it stays
# disabled unless the admin's presets enable it (Fedora and RHEL also end
# their policy in "disable *"; without any matching line preset would
# enable). Nothing is started here.

if [ "$1" -eq 1 ]; then
    chown root:secretsync /etc/secretsync
    chmod 0750 /etc/secretsync
fi
if [ ! -d /var/lib/secretsync ]; then
    install -d -o secretsync -g secretsync -m 0700 /var/lib/secretsync
fi
if [ "$1" -eq 1 ]; then
    systemctl --no-reload preset secretsync.service >/dev/null 2>&1 || :
fi
exit 0
