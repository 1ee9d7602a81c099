#!/usr/bin/env bash
# Build the CPU base image (default tag dayone-base:bookworm) without an image registry:
# debootstrap a minimal Debian with python3 + venv + CA certificates, then `docker import` it.
#
# Cached twice: (1) if the tag already exists, nothing is done; (2) the root filesystem tarball
# is kept under $DAYONE_CACHE/docker/ named by suite and date, so a fresh daemon re-imports it in
# seconds instead of re-running debootstrap. A tarball older than DAYONE_BASE_MAX_AGE_DAYS
# (default 7) is rebuilt, so security updates arrive weekly.
#
# The host's extra CA certificates (/usr/local/share/ca-certificates) are added so pip inside
# `docker build --network host` trusts the same TLS endpoints as the host. This base is for CI
# and local builds only; production images start FROM the engines' own images.
set -euo pipefail

suite="${DAYONE_BASE_SUITE:-bookworm}"
tag="${DAYONE_BASE_TAG:-dayone-base:$suite}"
mirror="${DAYONE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
max_age="${DAYONE_BASE_MAX_AGE_DAYS:-7}"
cache="${DAYONE_CACHE:-$HOME/.cache/dayone}/docker"
force=0  # --force: re-import the cached tarball; --rebuild: debootstrap again
rebuild=0
case "${1:-}" in --force) force=1 ;; --rebuild) force=1; rebuild=1 ;; esac

say() { echo "base-image: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

if ((!force)) && docker image inspect "$tag" >/dev/null 2>&1; then
    say "$tag already exists"
    exit 0
fi
mkdir -p "$cache"

tarball=$(find "$cache" -maxdepth 1 -name "rootfs-$suite-*.tar" -mtime "-$max_age" 2>/dev/null \
    | sort | tail -n 1)
if ((rebuild)) || [[ -z "$tarball" ]]; then
    tarball="$cache/rootfs-$suite-$(date +%Y%m%d).tar"
    root=$(mktemp -d /tmp/dayone-rootfs.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    t=$(now)
    say "debootstrap $suite from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$suite" "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
        || { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
    say "debootstrap took $(since "$t") s"
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        chroot "$root" update-ca-certificates >/dev/null
    fi
    # Smaller image, nothing host-specific left behind.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    tar -C "$root" --numeric-owner -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    say "rootfs tarball: $tarball ($(du -h "$tarball" | cut -f1))"
else
    say "reusing $tarball"
fi

old=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
t=$(now)
docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["/bin/bash"]' \
    --message "dayone base: debootstrap $suite $(basename "$tarball")" \
    "$tarball" "$tag" >/dev/null
say "imported $tag in $(since "$t") s"
# The image the tag pointed to before is now dangling: drop it unless something still uses it.
if [[ -n "$old" && "$old" != "$(docker image inspect --format '{{.Id}}' "$tag")" ]]; then
    docker image rm "$old" >/dev/null 2>&1 || true
fi
