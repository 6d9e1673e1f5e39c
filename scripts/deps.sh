#!/usr/bin/env bash
# Installs the Debian 12 packages tether needs, when they are missing.
#
#   scripts/deps.sh [demo|all]     (default: all)
#
#   demo  what building the library and running examples/demo.c needs
#   all   also the sanitizer runtimes, ABI checker, model checker, plotting
#         and valgrind that the test suite and benchmarks use, and the
#         Debian packaging tools and LuaRocks of the package tests, and the
#         Rust and Go toolchains of bindings/rust and the plugins in them
#
# As root it runs apt-get itself; otherwise it names the missing packages
# and exits 1, so a developer can install them however they like.
set -euo pipefail

demo_packages=(build-essential cmake pkg-config libffi-dev liblua5.4-dev lua5.4)
all_packages=("${demo_packages[@]}" clang libclang-rt-14-dev luajit python3
              python3-dev python3-pytest python3-setuptools python3-pip python3-venv abigail-tools spin gnuplot-nox valgrind
              debhelper dpkg-dev fakeroot lintian luarocks lua-socket
              cargo rustc bindgen golang-go)

case "${1:-all}" in
  demo) wanted=("${demo_packages[@]}") ;;
  all) wanted=("${all_packages[@]}") ;;
  *) echo "usage: $0 [demo|all]" >&2; exit 2 ;;
esac

is_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for pkg in "${wanted[@]}"; do
  is_installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "deps: all ${#wanted[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing Debian packages: ${missing[*]}" >&2
  echo "deps: install them as root, e.g.:" >&2
  echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
