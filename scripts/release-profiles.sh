#!/usr/bin/env bash
# Measures what [profile.release] settings do to the secretsync binary, to
# choose the profile in Cargo.toml. Each variant is a cold release build
# (dependencies included, as CI sees it) with `cargo --config` overrides, so
# Cargo.toml is never edited:
#
#   default  no overrides (opt-level 3, no LTO, 16 codegen units); measured
#            as built and as a `strip`ped copy (default-stripped)
#   fat-o3   lto="fat", codegen-units=1, strip=true, opt-level=3
#   fat-s    lto="fat", codegen-units=1, strip=true, opt-level="s"
#   thin-s   lto="thin", strip=true, opt-level="s" (default codegen units)
#
# Each variant builds `cargo build --release --locked --bin secretsync` into
# its own target directory, target/profiles/<variant>, from a snapshot of the
# HEAD commit (`git archive` into target/profiles/src/<commit>): the working
# tree is shared and edited while a build runs, so every variant compiles
# the same committed sources, never a half-made edit. The wall-clock build
# time and CPU time (user + sys of cargo and every rustc: the fairer figure
# when the machine is shared) go to target/profiles/<variant>/build-time
# with the commit (only a cold build, one into a directory without a release
# build yet, records them) and the binary is copied to
# target/profiles/bin/<variant>. Then benches/footprint.py measures every
# binary (size, agent RSS, CPU of one-shot syncs; against moto) and prints a
# Markdown table, followed by a table of build times.
#
# Usage: scripts/release-profiles.sh [--only VARIANT] [--skip-build] [-- FOOTPRINT_ARGS...]
#   --only VARIANT  build and measure one variant (default, fat-o3, fat-s, thin-s)
#   --skip-build    measure the binaries already in target/profiles/bin
#   -- ARGS         passed to benches/footprint.py (e.g. -- --repeat 5)
# Builds run one at a time; cold, each took 4.5-7.5 minutes on 2 cores. Nothing
# under target/profiles is ever deleted: to time a cold build again, remove
# target/profiles/<variant> yourself.
# Env: MOTO_VENV (as scripts/setup-moto.sh).
# Output: the tables on stdout; cargo and progress on stderr.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
profiles="$repo_root/target/profiles"
all_variants=(default fat-o3 fat-s thin-s)

usage() {
    echo "usage: scripts/release-profiles.sh [--only VARIANT] [--skip-build] [-- FOOTPRINT_ARGS...]" >&2
    exit 2
}

# The `cargo --config` overrides of one variant, one per line.
overrides() {
    case "$1" in
        default) ;;
        fat-o3) printf '%s\n' 'profile.release.lto="fat"' 'profile.release.codegen-units=1' \
            'profile.release.strip=true' 'profile.release.opt-level=3' ;;
        fat-s) printf '%s\n' 'profile.release.lto="fat"' 'profile.release.codegen-units=1' \
            'profile.release.strip=true' 'profile.release.opt-level="s"' ;;
        thin-s) printf '%s\n' 'profile.release.lto="thin"' \
            'profile.release.strip=true' 'profile.release.opt-level="s"' ;;
        *) echo "release-profiles: unknown variant '$1' (one of: ${all_variants[*]})" >&2; exit 2 ;;
    esac
}

variants=("${all_variants[@]}")
skip_build=0
footprint_args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --only) [[ $# -ge 2 ]] || usage; overrides "$2" >/dev/null; variants=("$2"); shift 2 ;;
        --skip-build) skip_build=1; shift ;;
        --) shift; footprint_args=("$@"); break ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) usage ;;
    esac
done

# Sets cpu_now to the user + sys seconds of this shell's waited-for children
# so far (bash `times`; it must run in this shell, not in a $(...) subshell,
# whose counters start at zero).
children_cpu() {
    local f
    f="$(mktemp)"
    times >"$f"
    cpu_now="$(awk 'NR == 2 { for (i = 1; i <= NF; i++) { split($i, t, /[ms]/); s += t[1] * 60 + t[2] } printf "%.0f", s }' "$f")"
    rm -f "$f"
}

mkdir -p "$profiles/bin"
if [[ $skip_build == 0 ]]; then
    rev="$(git rev-parse --short=12 HEAD)"
    src="$profiles/src/$rev"
    if [[ ! -f "$src/Cargo.toml" ]]; then
        mkdir -p "$profiles/src"
        tmp="$(mktemp -d "$profiles/src/.$rev.XXXXXX")"
        git archive HEAD | tar -x -C "$tmp"
        mv "$tmp" "$src"
    fi
    echo "==> sources: HEAD $rev, snapshot in $src" >&2
fi
for v in "${variants[@]}"; do
    [[ $skip_build == 1 ]] && continue
    dir="$profiles/$v"
    config_args=()
    while IFS= read -r o; do config_args+=(--config "$o"); done < <(overrides "$v")
    cold=1
    [[ -d "$dir/release" ]] && cold=0
    echo "==> build $v (${config_args[*]:-no overrides}; $([[ $cold == 1 ]] && echo cold || echo "incremental: $dir exists"))" >&2
    start=$EPOCHREALTIME
    children_cpu
    cpu_start=$cpu_now
    (cd "$src" && CARGO_TARGET_DIR="$dir" cargo build --release --locked --bin secretsync "${config_args[@]}")
    secs="$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')"
    children_cpu
    cpu=$((cpu_now - cpu_start))
    if [[ $cold == 1 ]]; then
        printf '%s %s %s\n' "$secs" "$cpu" "$rev" >"$dir/build-time"
    else
        echo "release-profiles: $v was an incremental build (${secs} s); keeping the cold time recorded earlier" >&2
    fi
    cp "$dir/release/secretsync" "$profiles/bin/$v"
    if [[ $v == default ]]; then
        strip -o "$profiles/bin/default-stripped" "$profiles/bin/default"
    fi
done

bins=()
for v in "${variants[@]}"; do
    [[ -x "$profiles/bin/$v" ]] || { echo "release-profiles: no binary for $v in $profiles/bin (build it first)" >&2; exit 1; }
    bins+=(--bin "$v=$profiles/bin/$v")
    [[ $v == default ]] && bins+=(--bin "default-stripped=$profiles/bin/default-stripped")
done

echo "==> moto emulator" >&2
moto_server="$(bash scripts/setup-moto.sh)"
moto_python="$(dirname "$moto_server")/python"
export AWS_EC2_METADATA_DISABLED=true

echo "==> footprint" >&2
"$moto_python" benches/footprint.py --moto "$moto_server" "${bins[@]}" "${footprint_args[@]}"

min_s() { awk -v s="$1" 'BEGIN { printf "%d min %02d s", s / 60, s % 60 }'; }

echo
echo "| variant | overrides | cold build (wall) | cold build CPU (user + sys) | sources of the cold build |"
echo "|---|---|---|---|---|"
for v in "${variants[@]}"; do
    time_cell="not recorded"
    cpu_cell="not recorded"
    built_from="?"
    if [[ -f "$profiles/$v/build-time" ]]; then
        read -r secs cpu built_from <"$profiles/$v/build-time"
        time_cell="$(min_s "$secs")"
        [[ $cpu == "?" ]] || cpu_cell="$(min_s "$cpu")"
    fi
    o="$(overrides "$v" | sed 's/^profile\.release\.//' | paste -sd ' ')"
    echo "| $v | ${o:-none} | $time_cell | $cpu_cell | $built_from |"
done
