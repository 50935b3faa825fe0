#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed for the browser tests (tests/api/console).
# Playwright's own browser download is not used (it cannot be fetched everywhere): the
# tests drive /usr/bin/chromium. Never fails the build: without Chromium the browser
# tests skip, saying why.
set -uo pipefail

CHROMIUM=${PULSE_TEST_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  echo "chromium: $CHROMIUM is installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium: not installed and no apt-get here; the browser tests will skip" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "chromium: not installed and not root; the browser tests will skip" >&2
    exit 0
  fi
fi
echo "chromium: installing Debian's chromium package"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q chromium >/tmp/pulse-chromium-install.log 2>&1; then
  # A fresh machine may have no package lists yet.
  $SUDO apt-get update -q >>/tmp/pulse-chromium-install.log 2>&1
  $SUDO apt-get install -y -q chromium >>/tmp/pulse-chromium-install.log 2>&1 \
    || echo "chromium: install failed (see /tmp/pulse-chromium-install.log); the browser tests will skip" >&2
fi
[ -x "$CHROMIUM" ] && echo "chromium: installed"
exit 0
