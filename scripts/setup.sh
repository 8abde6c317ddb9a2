#!/usr/bin/env bash
# Idempotent setup for a fresh Debian 12 machine, as root:
#   - build dependencies and runtime tools from Debian (bookworm),
#   - CRIU 4.2.1 built from Debian's source package (sid), tarball checksum verified, with the patches in
#     scripts/criu-patches applied (each says why in its header; rebuilt when they change),
#   - fs.pipe-max-size raised for lazy pages,
#   - the .NET build, with `migrate` and `migrate-agent` on PATH (/usr/local/bin).
# Re-running it does only what is missing. Logs go to stderr; exits non-zero on the first failure.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CRIU_VERSION=4.2.1
# sha256 of criu_4.2.1.orig.tar.gz (the checksum in Debian's criu_4.2.1-1.dsc).
CRIU_ORIG_SHA256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
CRIU_PREFIX=/opt/migrate/criu
CRIU_BIN=$CRIU_PREFIX/sbin/criu
# Patches applied to CRIU's source before the build, in name order. The build id (version + patch contents) is stamped
# next to the binary, so a changed, added or removed patch rebuilds CRIU on the next run.
CRIU_PATCH_DIR=$REPO/scripts/criu-patches
CRIU_STAMP=$CRIU_PREFIX/build-id
# MIGRATE_INSTALL_DIR publishes elsewhere (a second checkout benchmarking beside this one); only the default
# location is linked into /usr/local/bin.
INSTALL_DIR=${MIGRATE_INSTALL_DIR:-/opt/migrate/bin}
PIPE_MAX=$((4 * 1024 * 1024))

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (CRIU needs it): sudo $0"

APT_PACKAGES=(
  build-essential pkg-config git ca-certificates dpkg-dev patch
  libprotobuf-c-dev libprotobuf-dev protobuf-c-compiler protobuf-compiler python3-protobuf
  libnl-3-dev libnet1-dev libcap-dev libaio-dev libbsd-dev libgnutls28-dev uuid-dev libnftables-dev
  iproute2 nftables util-linux procps python3-grpcio
  # Real servers nobody here wrote, migrated by the integration tests (their own services are not started).
  redis-server nginx-light default-jre-headless curl
  # promtool checks the agent's /metrics in the tests (Prometheus' own server is not started); headless Chromium,
  # driven by chromedriver through python3-selenium, loads the agent's dashboard in a test.
  prometheus chromium chromium-driver python3-selenium
)

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    apt-get update -qq >&2
    apt_updated=1
  fi
}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt_update_once
  log "installing: ${missing[*]}"
  # No package may start its service here (redis-server, nginx): the tests run their own copies in namespaces.
  # policy-rc.d exit 101 is Debian's "action forbidden" for invoke-rc.d; ours is removed again at once.
  policy_rc_d=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy_rc_d=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || {
    if [ "$policy_rc_d" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    die "apt-get install failed: ${missing[*]}"
  }
  if [ "$policy_rc_d" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# --- CRIU ---------------------------------------------------------------------------------------
criu_patches() { find "$CRIU_PATCH_DIR" -maxdepth 1 -name '*.patch' -type f 2>/dev/null | LC_ALL=C sort; }
criu_build_id() {
  { echo "criu $CRIU_VERSION"; criu_patches | while read -r p; do echo "$(basename "$p") $(sha256sum <"$p" | cut -d' ' -f1)"; done; } |
    sha256sum | cut -d' ' -f1
}
CRIU_BUILD_ID=$(criu_build_id)
criu_version_ok() { [ -x "$CRIU_BIN" ] && "$CRIU_BIN" --version 2>/dev/null | grep -q "Version: ${CRIU_VERSION%.*}"; }
criu_ok() { criu_version_ok && [ "$(cat "$CRIU_STAMP" 2>/dev/null)" = "$CRIU_BUILD_ID" ]; }
if criu_ok; then
  log "CRIU present: $("$CRIU_BIN" --version | head -n1) (build $CRIU_BUILD_ID)"
else
  SRC_LIST=/etc/apt/sources.list.d/migrate-sid-src.sources
  if [ ! -f "$SRC_LIST" ]; then
    log "adding deb-src entry for sid (CRIU's source package only)"
    cat >"$SRC_LIST" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt_updated=0
  fi
  apt_update_once
  BUILD=/var/cache/migrate/criu-build
  mkdir -p "$BUILD"
  cd "$BUILD"
  find_tarball() { ls -1 criu_$1.orig.tar.* 2>/dev/null | sort -V | tail -n1 || true; }
  tarball=$(find_tarball "$CRIU_VERSION")
  if [ -z "$tarball" ]; then
    log "downloading CRIU ${CRIU_VERSION} source package"
    # apt-get source complains that the debian.tar.xz is missing; the build does not need it.
    apt-get source --download-only "criu=${CRIU_VERSION}-1" >&2 || true
    tarball=$(find_tarball "$CRIU_VERSION")
  fi
  if [ -z "$tarball" ]; then
    # The archive moved on: take the newest 4.2+ whose tarball matches its own .dsc.
    log "criu=${CRIU_VERSION}-1 not in the archive; trying the newest criu source"
    apt-get source --download-only criu >&2 || true
    tarball=$(find_tarball '4.[2-9]*')
    [ -n "$tarball" ] || die "no CRIU 4.2+ source tarball could be fetched"
    dsc=$(ls -1 criu_*.dsc | sort -V | tail -n1)
    CRIU_ORIG_SHA256=$(awk '/^Checksums-Sha256:/{f=1;next} f && /orig.tar/{print $1; exit}' "$dsc")
    log "using $tarball, checksum taken from $dsc"
  fi
  echo "${CRIU_ORIG_SHA256}  ${tarball}" | sha256sum -c - >&2 || die "checksum mismatch for $tarball"
  srcdir=$(tar -tf "$tarball" | awk -F/ 'NR==1{print $1}')
  rm -rf "$srcdir"
  tar -xf "$tarball"
  criu_version_ok && log "CRIU present but not built with the current patches: rebuilding"
  while read -r p; do
    [ -n "$p" ] || continue
    log "patching CRIU: $(basename "$p")"
    patch -d "$srcdir" -p1 --forward --batch --quiet <"$p" >&2 || die "$(basename "$p") does not apply to $tarball"
  done < <(criu_patches)
  log "building CRIU (make criu)"
  make -C "$srcdir" -j"$(nproc)" criu >"$BUILD/build.log" 2>&1 || { tail -n 40 "$BUILD/build.log" >&2; die "CRIU build failed (log: $BUILD/build.log)"; }
  install -D -m 0755 "$srcdir/criu/criu" "$CRIU_BIN"
  criu_version_ok || die "installed CRIU does not report version ${CRIU_VERSION%.*}"
  echo "$CRIU_BUILD_ID" >"$CRIU_STAMP"
  log "CRIU installed: $("$CRIU_BIN" --version | head -n1)"
fi
ln -sf "$CRIU_BIN" /usr/local/sbin/criu

# --- kernel settings ----------------------------------------------------------------------------
cur=$(cat /proc/sys/fs/pipe-max-size)
if [ "$cur" -lt "$PIPE_MAX" ]; then
  log "raising fs.pipe-max-size to $PIPE_MAX (lazy pages without CAP_SYS_RESOURCE)"
  sysctl -q -w fs.pipe-max-size="$PIPE_MAX"
fi
mkdir -p /etc/sysctl.d
echo "fs.pipe-max-size = $PIPE_MAX" >/etc/sysctl.d/60-migrate.conf

# --- .NET build ---------------------------------------------------------------------------------
command -v dotnet >/dev/null || die "the .NET 10 SDK is required (dotnet not on PATH)"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
log "building native helpers"
make -s -C "$REPO/native" >&2
log "publishing migrate and migrate-agent to $INSTALL_DIR"
mkdir -p "$INSTALL_DIR"
# ReadyToRun (precompiled) where the machine's runtime identifier is known: otherwise every method a migration runs
# for the first time is JIT-compiled while the tree is frozen, on the cores the page transfer needs (measured on 2
# cores: about half a CPU-second per process during a 1 GiB dump). Framework-dependent, as without it.
case "$(uname -m)" in
  x86_64) RID=linux-x64 ;;
  aarch64) RID=linux-arm64 ;;
  *) RID= ;;
esac
publish() { # publish PROJECT OUTDIR: ReadyToRun when it can be (crossgen2 comes from the package feed), else plain
  if [ -n "$RID" ] && dotnet publish "$1" -c Release -o "$2" -r "$RID" --self-contained false -p:PublishReadyToRun=true --nologo -v quiet >&2; then
    return
  fi
  [ -n "$RID" ] && log "ReadyToRun publish of $(basename "$1") failed (is the crossgen2 package restorable?); publishing it without"
  dotnet publish "$1" -c Release -o "$2" --nologo -v quiet >&2
}
# Separate folders: the agent runs on the ASP.NET shared framework, the CLI carries its own assemblies.
publish "$REPO/src/Migrator.Source/Cli/Migrate.Cli.csproj" "$INSTALL_DIR/migrate.d"
publish "$REPO/src/Migrator.Target/Migrator.Target.csproj" "$INSTALL_DIR/migrate-agent.d"
if [ -z "${MIGRATE_INSTALL_DIR:-}" ]; then
  ln -sfn "$INSTALL_DIR/migrate.d/migrate" /usr/local/bin/migrate
  ln -sfn "$INSTALL_DIR/migrate-agent.d/migrate-agent" /usr/local/bin/migrate-agent
fi
install -m 0755 "$REPO/native/bin/memwork" "$INSTALL_DIR/memwork"
install -m 0755 "$REPO/native/bin/tcpseq" "$INSTALL_DIR/tcpseq"
log "done: criu=$CRIU_BIN migrate=$INSTALL_DIR/migrate.d/migrate migrate-agent=$INSTALL_DIR/migrate-agent.d/migrate-agent"
