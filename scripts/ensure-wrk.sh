#!/usr/bin/env bash
# Makes sure Debian's wrk is installed for the closed-loop part of `make bench`
# (loadtest/saturation). Never fails the bench: without wrk it measures closed-loop with
# its own Python client, and the report names the tool that ran.
exec bash "$(dirname "$0")/ensure-debian-package.sh" wrk wrk \
  "the bench measures closed-loop with its own client"
