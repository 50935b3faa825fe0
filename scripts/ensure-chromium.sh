#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed for the browser tests (tests/api/console).
# Playwright's own browser download is not used (it cannot be fetched everywhere): the
# tests drive /usr/bin/chromium. Never fails the build: without Chromium the browser
# tests skip, saying why.
exec bash "$(dirname "$0")/ensure-debian-package.sh" chromium \
  "${PULSE_TEST_CHROMIUM:-/usr/bin/chromium}" "the browser tests will skip"
