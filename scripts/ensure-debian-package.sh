#!/usr/bin/env bash
# ensure-debian-package.sh PACKAGE COMMAND WITHOUT
# Makes sure COMMAND (a name on PATH or a path) is there, installing Debian's PACKAGE with
# apt-get when it is not (root, or sudo without a password). Never fails the build: WITHOUT
# says what happens without it (e.g. "the browser tests will skip").
set -uo pipefail

PACKAGE=$1
COMMAND=$2
WITHOUT=$3
LOG=/tmp/pulse-$PACKAGE-install.log

if command -v "$COMMAND" >/dev/null 2>&1; then
  echo "$PACKAGE: $(command -v "$COMMAND") is installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$PACKAGE: not installed and no apt-get here; $WITHOUT" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "$PACKAGE: not installed and not root; $WITHOUT" >&2
    exit 0
  fi
fi
echo "$PACKAGE: installing Debian's $PACKAGE package"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q "$PACKAGE" >"$LOG" 2>&1; then
  # A fresh machine may have no package lists yet.
  $SUDO apt-get update -q >>"$LOG" 2>&1
  $SUDO apt-get install -y -q "$PACKAGE" >>"$LOG" 2>&1 \
    || echo "$PACKAGE: install failed (see $LOG); $WITHOUT" >&2
fi
command -v "$COMMAND" >/dev/null 2>&1 && echo "$PACKAGE: installed"
exit 0
