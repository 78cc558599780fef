#!/usr/bin/env bash
# Install everything liferaft and its lab need on a Debian/Ubuntu machine, as root. Idempotent: what is there
# already is left alone. Usage: scripts/setup.sh  (env VENV=.venv, PYTHON=python3)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup needs root (apt packages, network namespaces for the lab). Run it as root." >&2
  exit 2
fi

# Debian packages the lab and the movers use. Installing them starts no service (no init system here; the lab
# starts its own servers).
APT_PACKAGES=(postgresql-15 postgresql-client-15 openssh-server pdns-server pdns-backend-sqlite3 sqlite3 dnsutils
              rclone iproute2 util-linux python3-psycopg2 python3-boto3 python3-venv chromium nftables
              pebble mariadb-server mariadb-client redis-server rsync podman runc skopeo docker-registry buildah
              mmdebstrap busybox-static)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js: any node >= 18 with npm will do (a nodesource build bundles npm; Debian's npm would conflict with it).
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  say "apt: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v s3rver >/dev/null; then
  say "npm: installing s3rver"
  npm install -g --no-audit --no-fund s3rver@3.7.1 >/dev/null
fi

if ! command -v terraform >/dev/null; then
  echo "note: terraform is not installed; Terraform provisioning and its tests need it (see README)." >&2
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "python: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.liferaft-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "pip: installing liferaft and its test dependencies into $VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -e ".[test]"
  touch "$stamp"
fi
# The Kinto example (examples/kinto) installs from a wheelhouse: lab hosts have no internet. Hosts run Debian's
# /usr/bin/python3 (3.11), so the wheels are for CPython 3.11 on this platform. Quick when already there.
KINTO_VERSION=26.5.0
WHEELHOUSE=${LIFERAFT_WHEELHOUSE:-/var/cache/liferaft/wheels}
WHEELS=("kinto[postgresql]==$KINTO_VERSION")
if [ "$(cat "$WHEELHOUSE/.complete" 2>/dev/null)" != "${WHEELS[*]}" ]; then
  say "pip: downloading ${WHEELS[*]} and their dependencies into $WHEELHOUSE"
  mkdir -p "$WHEELHOUSE"
  "$VENV/bin/pip" download -q --disable-pip-version-check --only-binary=:all: --python-version 3.11 \
    -d "$WHEELHOUSE" "${WHEELS[@]}"
  echo "${WHEELS[*]}" > "$WHEELHOUSE/.complete"
fi
say "setup done"
