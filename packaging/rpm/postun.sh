# %postun of the secretsync RPM. $1: 0 = erase, 1 = upgrade (this is the old
# package's scriptlet, run after the new version's files are in place).
#
# Upgrade: reload unit files, then restart the agent only if it is running
# (try-restart), as Fedora's %systemd_postun_with_restart does; a stopped or
# disabled agent stays so.
# Erase: kept on purpose, because RPM has no purge:
#   - /var/lib/secretsync (initial-sync markers, the tags the agent set),
#     which the package does not own, so rpm never deletes it;
#   - /etc/secretsync/agent.yaml.rpmsave, if agent.yaml was edited;
#   - the secretsync user and group: files the agent wrote outside its state
#     directory (import write-back) may still belong to that uid.
# Removing them is manual (docs/install.md). /etc/secretsync (made by %post,
# not owned by the package either) is removed only if empty.
# systemctl prints nothing and fails harmlessly where systemd is not running
# (containers, image builds in a chroot).

systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -ge 1 ]; then
    systemctl try-restart secretsync.service >/dev/null 2>&1 || :
else
    rmdir /etc/secretsync 2>/dev/null || :
fi
exit 0
