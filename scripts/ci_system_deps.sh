#!/usr/bin/env bash
# System packages the tests need beyond Python: headless Chromium and its
# WebDriver for the web page test (tests/test_serve.py). Debian packages only.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update -q
$SUDO apt-get install -y -q chromium chromium-driver
