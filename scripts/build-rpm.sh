#!/usr/bin/env bash
# Builds the RPM (Amazon Linux 2023, RHEL/Rocky/Alma 9) and inspects it with
# Debian's rpm tools. Not part of the test path: it needs the release build
# that scripts/build-deb.sh makes; run after it (as .ci/run does), nothing is
# compiled again.
#
#   1. installs cargo-generate-rpm if missing (cargo install --locked
#      cargo-generate-rpm), and Debian's rpm and cpio packages (apt-get) for
#      the checks;
#   2. cargo build --release --locked --bin=secretsync: the command cargo-deb
#      runs, so after build-deb.sh it is a no-op. cargo-generate-rpm does not
#      strip, so a stripped copy (cargo-deb's strip flags) goes to
#      $CARGO_TARGET_DIR/release/rpm-staging, where the rpm metadata expects it;
#   3. generates completions and man pages (examples/gen_docs.rs) into
#      $CARGO_TARGET_DIR/release/gen-docs, as build-deb.sh does;
#   4. cargo generate-rpm -> OUT_DIR/secretsync-VERSION-1.ARCH.rpm;
#   5. checks the package with rpm: the exact file list (rpm -qlp) with modes,
#      owners and flags, agent.yaml as %config(noreplace) (rpm -qcp, --dump),
#      docs (rpm -qdp), requirements (glibc <= 2.34 for AL2023 / EL9),
#      scriptlets (rpm -qp --scripts: identical to packaging/rpm/*.sh, run by
#      packaging/rpm/test-scriptlets.sh), the packaged unit (identical to
#      systemd/secretsync.service), the packaged binary and config
#      (`check --offline`); then installs it into a throwaway root (rpm --root
#      --noscripts: nothing runs on this host), checks the paths the unit uses,
#      `rpm -V`, and erases it again (edited config kept as .rpmsave, state
#      kept).
#
# Usage: scripts/build-rpm.sh [OUT_DIR]   (default: $CARGO_TARGET_DIR/rpm)
# Prints the .rpm path as its last line.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
out_dir="${1:-$target_dir/rpm}"
started=$SECONDS

step() { echo "==> $*" >&2; }
die() {
    echo "build-rpm: FAIL: $*" >&2
    exit 1
}

missing=()
command -v rpm >/dev/null || missing+=(rpm)
command -v cpio >/dev/null || missing+=(cpio)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "${missing[*]} not found; apt-get install ${missing[*]}"
    step "installing ${missing[*]} (Debian packages, for the checks)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for tool in rpm rpm2cpio cpio strip readelf python3; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
if ! cargo generate-rpm --version >/dev/null 2>&1; then
    step "installing cargo-generate-rpm"
    cargo install --locked cargo-generate-rpm
fi

version="$(cargo metadata --no-deps --format-version 1 --locked |
    python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "secretsync"))')"
arch="$(uname -m)"
rpm_file="$out_dir/secretsync-$version-1.$arch.rpm"

step "cargo build --release (a no-op after build-deb.sh)"
# Exactly cargo-deb's build command (cargo-deb 3.x: --release, the locking
# flag, --bin for each binary asset), so the two scripts share one build.
cargo build --release --locked --bin=secretsync
stage="$target_dir/release/rpm-staging"
rm -rf "$stage"
mkdir -p "$stage"
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    -o "$stage/secretsync" "$target_dir/release/secretsync"

step "generating completions and man pages"
gen="$target_dir/release/gen-docs"
rm -rf "$gen"
cargo run --quiet --locked --example gen_docs -- "$gen" >/dev/null
gzip -9n "$gen"/man/*.1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Queries get a private, throwaway database: Debian's rpm would otherwise
# create one in ~/.rpmdb even for `rpm -qp`.
rpmq() { rpm --dbpath "$work/querydb" "$@"; }

step "cargo generate-rpm"
mkdir -p "$out_dir"
rm -f "$rpm_file"
# find-requires: rpm's own ELF dependency generator (Debian's rpm ships it),
# the same requirements rpmbuild would write.
cargo generate-rpm --target-dir "$target_dir" --auto-req find-requires -o "$out_dir"
[ -f "$rpm_file" ] || die "cargo generate-rpm did not write $rpm_file ($(ls "$out_dir"))"

step "rpm -qip"
rpmq -qip "$rpm_file"
step "rpm -qlvp"
rpmq -qlvp "$rpm_file"

step "checking the header"
q() { rpmq -qp --qf "$1" "$rpm_file"; }
[ "$(q '%{NAME} %{VERSION} %{RELEASE} %{ARCH}')" = "secretsync $version 1 $arch" ] ||
    die "name/version/release/arch: $(q '%{NAME} %{VERSION} %{RELEASE} %{ARCH}')"
[ "$(q '%{LICENSE}')" = "Apache-2.0" ] || die "license: $(q '%{LICENSE}')"

# The exact file list: the fixed files plus one entry per generated man page
# and per IAM policy file. Anything missing or extra fails.
{
    cat <<'EOF'
/etc/secretsync/agent.yaml
/usr/bin/secretsync
/usr/lib/systemd/system-preset/90-secretsync.preset
/usr/lib/systemd/system/secretsync.service
/usr/lib/sysusers.d/secretsync.conf
/usr/share/bash-completion/completions/secretsync
/usr/share/doc/secretsync/README.md
/usr/share/doc/secretsync/agent.example.yaml
/usr/share/doc/secretsync/install.md
/usr/share/fish/vendor_completions.d/secretsync.fish
/usr/share/zsh/site-functions/_secretsync
EOF
    for f in "$gen"/man/*.1.gz; do echo "/usr/share/man/man1/${f##*/}"; done
    for f in packaging/iam/*; do echo "/usr/share/doc/secretsync/iam/${f##*/}"; done
} | LC_ALL=C sort >"$work/expected-files"
rpmq -qlp "$rpm_file" | LC_ALL=C sort >"$work/files"
if ! diff -u "$work/expected-files" "$work/files" >"$work/files.diff"; then
    cat "$work/files.diff" >&2
    die "file list differs from the expected one (- expected, + packaged)"
fi

# PATH -> "MODE USER GROUP FLAGS" (FLAGS: RPMFILE_* bits; 1 config, 2 doc,
# 16 noreplace).
q '[%{FILENAMES} %{FILEMODES:octal} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS}\n]' >"$work/attrs"
expect_attrs() { # PATH MODE USER GROUP FLAGS
    local got
    got="$(awk -v p="$1" '$1 == p { print $2, $3, $4, $5 }' "$work/attrs")"
    [ "$got" = "$2 $3 $4 $5" ] || die "$1: mode/user/group/flags '$got', want '$2 $3 $4 $5'"
}
expect_attrs /usr/bin/secretsync 100755 root root 0
expect_attrs /etc/secretsync/agent.yaml 100640 root secretsync 17
expect_attrs /usr/lib/systemd/system/secretsync.service 100644 root root 0
expect_attrs /usr/lib/sysusers.d/secretsync.conf 100644 root root 0
expect_attrs /usr/lib/systemd/system-preset/90-secretsync.preset 100644 root root 0
expect_attrs /usr/share/bash-completion/completions/secretsync 100644 root root 0
expect_attrs /usr/share/zsh/site-functions/_secretsync 100644 root root 0
expect_attrs /usr/share/fish/vendor_completions.d/secretsync.fish 100644 root root 0
expect_attrs /usr/share/man/man1/secretsync.1.gz 100644 root root 2
expect_attrs /usr/share/doc/secretsync/install.md 100644 root root 2
expect_attrs /usr/share/doc/secretsync/iam/agent-policy.json 100644 root root 2
# Everything else: root-owned, 0644, not config.
awk '$1 != "/usr/bin/secretsync" && $1 != "/etc/secretsync/agent.yaml" && ($2 != "100644" || $3 != "root" || $4 != "root" || $5 % 2 == 1)' \
    "$work/attrs" >"$work/odd"
[ ! -s "$work/odd" ] || die "unexpected mode, owner or config flag: $(cat "$work/odd")"

[ "$(rpmq -qcp "$rpm_file")" = /etc/secretsync/agent.yaml ] ||
    die "config files (rpm -qcp) are '$(rpmq -qcp "$rpm_file" | tr '\n' ' ')', want only /etc/secretsync/agent.yaml"
# --dump: path size mtime digest mode owner group isconfig isdoc rdev symlink
read -r _ _ _ _ d_mode d_owner d_group d_config _ < <(rpmq -qp --dump "$rpm_file" | awk '$1 == "/etc/secretsync/agent.yaml"')
[ "$d_mode $d_owner $d_group $d_config" = "0100640 root secretsync 1" ] ||
    die "agent.yaml in --dump: '$d_mode $d_owner $d_group $d_config', want '0100640 root secretsync 1'"
[ "$(q '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' | awk '$2 == "/etc/secretsync/agent.yaml" { print $1 }')" = cn ] ||
    die "agent.yaml is not %config(noreplace)"
rpmq -qdp "$rpm_file" | grep -qx /usr/share/man/man1/secretsync.1.gz || die "man page not marked %doc"
! rpmq -qdp "$rpm_file" | grep -q '^/usr/bin/' || die "the binary is marked %doc"

step "checking requirements"
rpmq -qp --requires "$rpm_file" >"$work/requires"
cat "$work/requires" >&2
for need in /bin/sh shadow-utils 'libc.so.6()(64bit)'; do
    grep -qxF "$need" "$work/requires" || die "no Requires: $need"
done
# AL2023 and EL9 ship glibc 2.34: a newer symbol version would not install.
newest_glibc="$(sed -n 's/^libc\.so\.6(GLIBC_\([0-9.]*\)).*/\1/p' "$work/requires" | sort -V | tail -n 1)"
[ -n "$newest_glibc" ] || die "no versioned glibc requirement (find-requires did not run?)"
[ "$(printf '%s\n' "$newest_glibc" 2.34 | sort -V | tail -n 1)" = 2.34 ] ||
    die "needs glibc $newest_glibc; Amazon Linux 2023 and EL9 have 2.34"
if grep -Eq '^(libc6|adduser|debconf)' "$work/requires"; then die "Debian package names in Requires"; fi
rpmq -qp --provides "$rpm_file" | grep -q '^user(secretsync)' || die "no user(secretsync) provide from the sysusers.d file"

step "rpm -qp --scripts"
rpmq -qp --scripts "$rpm_file"
mkdir -p "$work/scripts"
for pair in PREIN:pre POSTIN:post PREUN:preun POSTUN:postun; do
    tag="${pair%%:*}"
    name="${pair##*:}"
    [ "$(q "%{${tag}PROG}")" = /bin/sh ] || die "%$name interpreter is '$(q "%{${tag}PROG}")', want /bin/sh"
    q "%{$tag}" >"$work/scripts/$name.sh"
    # --qf drops nothing but may differ in the final newline.
    cmp -s <(sed -e '$a\' "$work/scripts/$name.sh") <(sed -e '$a\' "packaging/rpm/$name.sh") ||
        die "%$name in the package differs from packaging/rpm/$name.sh"
done
for tag in PRETRANS POSTTRANS TRIGGERSCRIPTS VERIFYSCRIPT; do
    [ "$(q "%{$tag}")" = "(none)" ] || die "unexpected $tag scriptlet"
done
if grep -Eq 'systemctl (--[a-z-]+ )*(enable|start|restart|reload-or-restart) ' "$work/scripts/"*.sh; then
    die "a scriptlet enables or starts the unit"
fi
if ! grep -Eq '^if \[ "\$1" -ge 1 \]' "$work/scripts/postun.sh" ||
    ! grep -q 'systemctl try-restart secretsync.service' "$work/scripts/postun.sh"; then
    die "%postun does not try-restart a running agent on upgrade"
fi

step "payload"
mkdir -p "$work/fs"
rpmq -K "$rpm_file" >/dev/null || die "rpm -K: header or payload digest does not match"
# Debian's rpm2cpio (4.18) exits 1 on every package cargo-generate-rpm writes,
# whatever the compression, although rpm -K is clean and the archive is
# complete; so its status is not used: the archive must list exactly the
# packaged files instead.
rpm2cpio "$rpm_file" >"$work/payload.cpio" || true
(cd "$work/fs" && cpio -idm --quiet <"$work/payload.cpio") || die "cpio could not unpack the payload"
(cd "$work/fs" && find . -type f | sed 's|^\.||' | LC_ALL=C sort) | cmp -s - "$work/files" ||
    die "payload does not hold exactly the packaged files"
cmp -s "$work/fs/usr/lib/systemd/system/secretsync.service" systemd/secretsync.service ||
    die "packaged unit differs from systemd/secretsync.service"
cmp -s "$work/fs/usr/lib/sysusers.d/secretsync.conf" packaging/rpm/secretsync.sysusers ||
    die "packaged sysusers.d file differs from packaging/rpm/secretsync.sysusers"
# The unit stays disabled after %post's preset whatever the distribution's
# policy: the package's own preset disables it.
grep -qx 'disable secretsync.service' "$work/fs/usr/lib/systemd/system-preset/90-secretsync.preset" ||
    die "90-secretsync.preset does not disable secretsync.service"
zcat "$work/fs/usr/share/man/man1/secretsync.1.gz" | grep -q '^\.SH "EXIT STATUS"' || die "man page lacks EXIT STATUS"
file_type="$(od -An -c -N4 "$work/fs/usr/bin/secretsync" | tr -d ' ')"
[ "$file_type" = '177ELF' ] || die "/usr/bin/secretsync is not an ELF file"
if readelf -S "$work/fs/usr/bin/secretsync" 2>/dev/null | grep -q '\.symtab'; then
    die "/usr/bin/secretsync is not stripped"
fi

step "scriptlets (packaging/rpm/test-scriptlets.sh on the packaged ones)"
bash packaging/rpm/test-scriptlets.sh "$work/scripts" "$work/fs/usr/lib/sysusers.d/secretsync.conf"

step "packaged binary"
"$work/fs/usr/bin/secretsync" --version
# Exit 1 is tolerated while the example's import-prioritize-destination sync
# is reported as not supported yet (as in build-deb.sh).
set +e
check_out="$("$work/fs/usr/bin/secretsync" check --offline --config "$work/fs/etc/secretsync/agent.yaml" 2>&1)"
check_rc=$?
set -e
echo "$check_out"
case "$check_rc" in 0 | 1) ;; *) die "check --offline of the packaged config exited $check_rc" ;; esac
grep -q "config OK" <<<"$check_out" || die "packaged config does not validate"

step "rpm -i into a throwaway root"
root="$work/root"
mkdir -p "$root/etc"
# The accounts %pre would create (--noscripts: no scriptlet runs on this
# host), so that rpm resolves the packaged owners inside the root.
printf 'root:x:0:0:root:/root:/bin/sh\nsecretsync:x:990:990:secretsync agent:/var/lib/secretsync:/usr/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nsecretsync:x:990:\n' >"$root/etc/group"
rpmroot() { rpm --root "$root" --dbpath /var/lib/rpm "$@"; }
rpmroot --initdb
# --force-debian: Debian's rpm refuses installs without it (it wants alien).
rpmroot -i --nodeps --noscripts --notriggers --force-debian "$rpm_file" 2>"$work/install.err" || {
    cat "$work/install.err" >&2
    die "rpm -i into the throwaway root failed"
}
if [ -s "$work/install.err" ]; then
    cat "$work/install.err" >&2
    die "rpm -i printed warnings"
fi
rpmroot -q secretsync >/dev/null || die "rpm does not list the package as installed"
[ "$(rpmroot -qc secretsync)" = /etc/secretsync/agent.yaml ] || die "installed config files: $(rpmroot -qc secretsync)"
# --nodeps: the empty root satisfies none of the Requires; files only.
rpmroot -V --nodeps secretsync || die "rpm -V of the fresh install reports changed files"

# The paths the unit uses, read from the packaged unit itself.
unit="$root/usr/lib/systemd/system/secretsync.service"
[ -f "$unit" ] || die "unit not installed"
exec_start="$(sed -n 's/^ExecStart=//p' "$unit")"
exec_bin="${exec_start%% *}"
[ -x "$root$exec_bin" ] || die "ExecStart binary $exec_bin is not installed executable"
config="$(sed -n 's/.* --config \([^ ]*\).*/\1/p' <<<"$exec_start")"
[ -n "$config" ] || die "ExecStart names no --config"
[ -f "$root$config" ] || die "ExecStart's config $config is not installed"
[ "$(stat -c '%a %u %g' "$root$config")" = "640 0 990" ] ||
    die "$config: $(stat -c '%a %u:%g' "$root$config"), want 640 root:secretsync"
for doc in $(sed -n 's/^Documentation=//p' "$unit"); do
    case "$doc" in
    man:*)
        page="${doc#man:}"
        name="${page%%(*}"
        section="${page#*(}"
        section="${section%)}"
        [ -f "$root/usr/share/man/man$section/$name.$section.gz" ] || die "Documentation=$doc: no man page installed"
        ;;
    file://*)
        [ -f "$root${doc#file://}" ] || die "Documentation=$doc: not installed"
        ;;
    *) die "unexpected Documentation=$doc" ;;
    esac
done
for key in User Group; do
    [ "$(sed -n "s/^$key=//p" "$unit")" = secretsync ] || die "unit $key= is not secretsync (the sysusers.d account)"
done
grep -q '^u secretsync ' "$root/usr/lib/sysusers.d/secretsync.conf" || die "sysusers.d file does not create user secretsync"
for d in StateDirectory RuntimeDirectory ConfigurationDirectory; do
    [ "$(sed -n "s/^$d=//p" "$unit")" = secretsync ] || die "unit $d= is not secretsync"
done
"$root/usr/bin/secretsync" --help >/dev/null || die "installed binary does not run"

step "rpm -e from the throwaway root (edited config and state kept)"
echo "# edited" >>"$root/etc/secretsync/agent.yaml"
# %post would have made it; state the agent wrote stays after erase.
mkdir -p "$root/var/lib/secretsync"
echo marker >"$root/var/lib/secretsync/marker"
rpmroot -e --nodeps --noscripts --notriggers --force-debian secretsync 2>"$work/erase.err" || {
    cat "$work/erase.err" >&2
    die "rpm -e failed"
}
cat "$work/erase.err" >&2
! rpmroot -q secretsync >/dev/null 2>&1 || die "still installed after rpm -e"
[ ! -e "$root/usr/bin/secretsync" ] || die "binary left after rpm -e"
[ -f "$root/etc/secretsync/agent.yaml.rpmsave" ] || die "edited agent.yaml not saved as agent.yaml.rpmsave"
[ -f "$root/var/lib/secretsync/marker" ] || die "rpm -e removed /var/lib/secretsync"

echo "build-rpm: OK in $((SECONDS - started))s" >&2
echo "$rpm_file"
