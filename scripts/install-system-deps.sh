#!/usr/bin/env bash
# System packages, installed only when missing (needs root or sudo; Debian/Ubuntu).
#
#   install-system-deps.sh build   what `make venv` needs: python3 with venv + ensurepip
#                                  (python3-venv) and make. On a bare machine without
#                                  make, run this once by hand first.
#   install-system-deps.sh test    what the test suite needs: a real redis-server,
#                                  Prometheus (promtool), the Pushgateway, nginx, openssl.
#
# Afterwards every required command is checked; a part still missing is an error that
# names the package, so a broken install step stops CI here, not as skipped tests.
has() {  # an executable regular file on PATH; nginx installs to /usr/sbin, which a
         # non-root PATH may lack. `command -v` alone also names a file it cannot run
         # (no execute bit, or /dev/null bind-mounted over a binary).
  local path
  for path in "$(command -v "$1" 2>/dev/null)" "/usr/sbin/$1"; do
    [ -f "$path" ] && [ -x "$path" ] && return 0
  done
  return 1
}

# sourced (the tests call `has`): define the functions, install nothing
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  return 0
fi

set -euo pipefail
stage="${1:-test}"
declare -A package_of
case "$stage" in
  build)
    package_of=([python3]=python3 [make]=make)
    ;;
  test)
    package_of=([redis-server]=redis-server [promtool]=prometheus [prometheus]=prometheus
                [prometheus-pushgateway]=prometheus-pushgateway [nginx]=nginx-light
                [openssl]=openssl)
    ;;
  *)
    echo "usage: $0 build|test" >&2
    exit 2
    ;;
esac

venv_ok() {  # python3 -m venv needs ensurepip, which Debian ships in python3-venv
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1
}

need=()
for command in "${!package_of[@]}"; do
  has "$command" || need+=("${package_of[$command]}")
done
if [ "$stage" = build ] && ! venv_ok; then  # also when python3 itself is missing
  need+=("python3-venv")
fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u | sed '/^$/d')

if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then
    if ! command -v sudo >/dev/null; then
      echo "missing system packages: ${need[*]}; run as root: apt-get install ${need[*]}" >&2
      exit 1
    fi
    SUDO="sudo"
  fi
  if ! command -v apt-get >/dev/null; then
    echo "missing system packages: ${need[*]} (no apt-get here: install them by hand)" >&2
    exit 1
  fi
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
  if [ "$stage" = test ]; then
    # the Debian packages start services; tests start their own on free loopback ports
    $SUDO systemctl disable --now redis-server prometheus prometheus-pushgateway nginx \
      >/dev/null 2>&1 || true
    for service in redis-server prometheus prometheus-pushgateway nginx; do
      $SUDO service "$service" stop >/dev/null 2>&1 || true
    done
  fi
fi

missing=()
for command in "${!package_of[@]}"; do
  has "$command" || missing+=("$command (apt-get install ${package_of[$command]})")
done
if [ "$stage" = build ] && ! venv_ok; then
  missing+=("python3 -m venv (apt-get install python3-venv)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  printf 'still missing after the install step:\n' >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi
echo "system packages present ($stage): ${!package_of[*]}"
