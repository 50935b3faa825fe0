#!/usr/bin/env bash
# Makes sure Debian's wrk is installed for the closed-loop part of `make bench`
# (loadtest/saturation.py). Never fails the bench: without wrk the saturation part
# measures closed-loop with the Python open-loop client's closed mode instead and the
# report names the tool that ran.
set -uo pipefail

if command -v wrk >/dev/null 2>&1; then
  echo "wrk: $(command -v wrk) is installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "wrk: not installed and no apt-get here; the bench measures closed-loop with its own client" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "wrk: not installed and not root; the bench measures closed-loop with its own client" >&2
    exit 0
  fi
fi
echo "wrk: installing Debian's wrk package"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q wrk >/tmp/pulse-wrk-install.log 2>&1; then
  # A fresh machine may have no package lists yet.
  $SUDO apt-get update -q >>/tmp/pulse-wrk-install.log 2>&1
  $SUDO apt-get install -y -q wrk >>/tmp/pulse-wrk-install.log 2>&1 \
    || echo "wrk: install failed (see /tmp/pulse-wrk-install.log); the bench measures closed-loop with its own client" >&2
fi
command -v wrk >/dev/null 2>&1 && echo "wrk: installed"
exit 0
