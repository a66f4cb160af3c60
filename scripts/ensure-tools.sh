#!/usr/bin/env bash
# Installs the external tools the test suite runs, when they are missing:
#   promtool      (Debian package prometheus)    deploy/prometheus rule checks and unit tests
#   redis-server  (Debian package redis-server)  tests of the replicated scoring mode
# Helm is not installed here: it is a Go tool pinned in deploy/go.mod and
# built by `go tool helm` (see the Makefile's helm targets).
#
# As root it installs with apt-get (after apt-get update). Otherwise it only
# says what is missing: tests that need a missing tool skip with a message on
# a developer's machine and fail under CI=true.
set -euo pipefail

declare -A pkg=([promtool]=prometheus [redis-server]=redis-server)
missing=()
for tool in promtool redis-server; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

pkgs=()
for tool in "${missing[@]}"; do pkgs+=("${pkg[$tool]}"); done

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-tools: missing ${missing[*]}; install the Debian packages ${pkgs[*]} (tests that need them skip, and fail under CI=true)" >&2
  exit 0
fi

echo "ensure-tools: installing ${pkgs[*]} for ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Installing a server package must not start the server: there is no init
# system here, and the tests start their own instances on free ports.
# policy-rc.d exit 101 is Debian's documented "action forbidden" answer
# (invoke-rc.d(8)); it is removed again afterwards unless it was already there.
own_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  own_policy=1
fi
trap 'if [ $own_policy -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
for tool in "${missing[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "ensure-tools: $tool still missing after installing ${pkg[$tool]}" >&2; exit 1; }
done
echo "ensure-tools: $(promtool --version 2>&1 | head -1); $(redis-server --version)"
