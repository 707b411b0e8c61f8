#!/usr/bin/env bash
# Install the system packages the local stack needs (PostgreSQL, MariaDB, Prometheus, Java 17,
# Maven) on Debian/Ubuntu. Idempotent and quick when everything is there: dpkg is asked first,
# apt only for what is missing. The packages must not start system-wide services: `simpul stack up`
# runs its own servers under the stack home on its own ports.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
else
  SUDO=
fi

missing=()
need() { # need <package>: remember it unless dpkg says it is installed
  if ! dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$1")
  fi
}

need postgresql
need mariadb-server
need mariadb-client
# Prometheus and promtool: the stack's monitoring server and the alert-rule tests.
need prometheus
# Java and Maven may come from elsewhere (SDKMAN, a JDK tarball); only install when absent.
command -v java >/dev/null 2>&1 || need openjdk-17-jre-headless
command -v mvn >/dev/null 2>&1 || need maven

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "system packages: all present"
  exit 0
fi

echo "system packages: installing ${missing[*]}"
policy=/usr/sbin/policy-rc.d
# A policy-rc.d exiting 101 tells invoke-rc.d not to start services during the install.
# Keep any existing one and put it back afterwards.
backup=
if [[ -e $policy ]]; then
  backup=$(mktemp)
  $SUDO cp -p "$policy" "$backup"
fi
restore_policy() {
  if [[ -n $backup ]]; then
    $SUDO cp -p "$backup" "$policy" && rm -f "$backup"
  else
    $SUDO rm -f "$policy"
  fi
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
$SUDO chmod 0755 "$policy"

# `env` passes the variable through sudo too; noninteractive keeps debconf from prompting.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "system packages: done"
