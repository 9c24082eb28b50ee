#!/usr/bin/env bash
# A real Prometheus and Alertmanager for driving the agent from alerts on the simulated
# fleet, from Debian's packages: `prometheus` (prometheus, promtool) and
# `prometheus-alertmanager` (prometheus-alertmanager, amtool).
#
# Usage: scripts/prometheus-stack.sh install   make sure the four programs exist, installing
#                                              the packages with apt-get when one is
#                                              missing (as root, or through `sudo -n`);
#                                              print their versions
#        scripts/prometheus-stack.sh check     check deploy/prometheus/: the rules, their
#                                              unit tests, prometheus.yml, alertmanager.yml
#
# `install` runs `apt-get install --no-install-recommends` first and `apt-get update` only
# when that fails, each bounded by SRE_APT_TIMEOUT_S (600 s), waiting at most
# SRE_APT_LOCK_TIMEOUT_S (120 s) for another apt to finish. Note that on a machine running
# systemd the packages also start system services on 9090 and 9093; the tests run their own
# copies on other ports. Exits non-zero, loudly, when a program is still missing.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
rules_dir="$root/deploy/prometheus"

apt_timeout_s="${SRE_APT_TIMEOUT_S:-600}"
apt_lock_timeout_s="${SRE_APT_LOCK_TIMEOUT_S:-120}"
packages=(prometheus prometheus-alertmanager)
programs=(prometheus promtool prometheus-alertmanager amtool)

say() { echo "prometheus-stack: $*" >&2; }
loud() {
  echo "*** prometheus-stack: $* ***" >&2
  exit 1
}

missing_programs() {
  local p
  for p in "${programs[@]}"; do
    command -v "$p" >/dev/null 2>&1 || echo "$p"
  done
}

print_versions() {
  local p
  for p in "${programs[@]}"; do
    printf '%-24s %s\n' "$p" "$("$p" --version 2>&1 | head -n 1)"
  done
}

# Runs apt-get as root: directly, or through passwordless sudo.
as_root_apt() {
  local env=(env DEBIAN_FRONTEND=noninteractive)
  local apt=(timeout "$apt_timeout_s" apt-get -o "DPkg::Lock::Timeout=$apt_lock_timeout_s" "$@")
  if [[ "$(id -u)" -eq 0 ]]; then
    "${env[@]}" "${apt[@]}"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "${env[@]}" "${apt[@]}"
  else
    return 125
  fi
}

install() {
  local missing
  missing="$(missing_programs)"
  if [[ -z "$missing" ]]; then
    print_versions
    return 0
  fi
  say "missing: ${missing//$'\n'/ }"
  command -v apt-get >/dev/null 2>&1 ||
    loud "no apt-get here: install ${packages[*]} (Prometheus 2.x, Alertmanager 0.25+) by hand"
  local rc=0
  as_root_apt install -y --no-install-recommends "${packages[@]}" || rc=$?
  if [[ "$rc" -eq 125 ]]; then
    loud "installing ${packages[*]} needs root or passwordless sudo; run: sudo apt-get install --no-install-recommends ${packages[*]}"
  fi
  if [[ "$rc" -ne 0 ]]; then
    say "apt-get install failed ($rc); updating the package lists and trying again"
    as_root_apt update || loud "apt-get update failed"
    as_root_apt install -y --no-install-recommends "${packages[@]}" ||
      loud "apt-get install ${packages[*]} failed"
  fi
  missing="$(missing_programs)"
  [[ -z "$missing" ]] ||
    loud "still missing after the install: ${missing//$'\n'/ }"
  print_versions
}

check() {
  local p
  for p in promtool amtool; do
    command -v "$p" >/dev/null 2>&1 || loud "$p is missing: run scripts/prometheus-stack.sh install"
  done
  cd "$rules_dir"
  promtool check rules alerts.yml
  promtool test rules alerts_test.yml
  promtool check config prometheus.yml
  amtool check-config alertmanager.yml
}

case "${1:-}" in
  install) install ;;
  check) check ;;
  *)
    echo "usage: $0 install|check" >&2
    exit 2
    ;;
esac
