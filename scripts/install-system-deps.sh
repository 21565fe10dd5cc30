#!/usr/bin/env bash
# System packages the test suite needs: a real redis-server and a real Prometheus
# (promtool for rule tests). Installs only what is missing; needs root or sudo.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-pushgateway >/dev/null || need+=(prometheus-pushgateway)
command -v nginx >/dev/null || need+=(nginx-light)   # fleet recipe test (load balancer)
command -v openssl >/dev/null || need+=(openssl)      # TLS test certificates
if [ ${#need[@]} -eq 0 ]; then
  echo "system packages present: redis-server, prometheus, nginx, openssl"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
echo "installing: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
# the Debian packages start services; tests start their own on free loopback ports
$SUDO systemctl disable --now redis-server prometheus prometheus-pushgateway nginx >/dev/null 2>&1 || true
# the packages start their daemons without systemd too; stop them so ports stay free
$SUDO service redis-server stop >/dev/null 2>&1 || true
$SUDO service prometheus stop >/dev/null 2>&1 || true
$SUDO service nginx stop >/dev/null 2>&1 || true
$SUDO service prometheus-pushgateway stop >/dev/null 2>&1 || true
