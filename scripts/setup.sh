#!/bin/sh
# setup.sh - installs the Debian packages lumen needs to build and test, if missing.
# Idempotent: prints what it installs, and touches the network only when something is missing.
set -e
PKGS="build-essential cmake pkg-config libopenblas-dev libjansson-dev libpcre2-dev"
missing=""
for p in $PKGS; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
if [ -z "$missing" ]; then
  exit 0
fi
echo "setup: installing:$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
