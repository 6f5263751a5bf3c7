#!/usr/bin/env bash
# Debian's Chromium for the dashboard's browser tests (driven by Playwright with the system
# browser; Playwright's own browser download is never used). Idempotent.
# Usage: bash scripts/services/chromium.sh [start]
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    echo "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q chromium >/tmp/sluice-chromium-install.log 2>&1 || {
    $SUDO apt-get update -q >>/tmp/sluice-chromium-install.log 2>&1
    $SUDO apt-get install -y -q chromium >>/tmp/sluice-chromium-install.log 2>&1
} || { echo "could not install chromium (see /tmp/sluice-chromium-install.log)" >&2; exit 1; }
echo "chromium installed: $(/usr/bin/chromium --version 2>/dev/null)"
