# %preun of the secretsync RPM. $1: 0 = erase, 1 = upgrade (this is the old
# package's scriptlet, run after the new version is in place).
#
# Erase: disable and stop the agent while its binary is still there, as
# Fedora's %systemd_preun does. An upgrade leaves the unit alone (%postun
# restarts it if it was running). Config, state and the user are not touched
# here.

if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable secretsync.service >/dev/null 2>&1 || :
    systemctl stop secretsync.service >/dev/null 2>&1 || :
fi
exit 0
