#!/usr/bin/env bash
# Installs what building and testing licgate needs on a Debian/Ubuntu machine, only
# when missing: a C toolchain, cmake and pkg-config (pingora builds zlib-ng), and the
# rustfmt/clippy components; with --browser also chromium and chromium-driver, with
# --python python3 with venv, with --systemd systemd-analyze, with --prometheus the
# Prometheus server and promtool, with --postgres the PostgreSQL server (initdb, pg_ctl:
# the authority's tests start their own on a free port); any
# other argument names a command to install (e.g. wrk). Safe to run repeatedly.
set -euo pipefail

missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v kill >/dev/null 2>&1 || missing+=(procps)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
for extra in "$@"; do
  case "$extra" in
    # Headless Chromium and its WebDriver, for the browser test.
    --browser) command -v chromedriver >/dev/null 2>&1 || missing+=(chromium chromium-driver) ;;
    # Python 3 with venv and pip, for the end-to-end tests' virtualenv.
    --python)
      command -v python3 >/dev/null 2>&1 || missing+=(python3)
      python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv python3-pip) ;;
    # systemd-analyze, to check deploy/systemd.
    --systemd) command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd) ;;
    # Prometheus and promtool, for the metrics, dashboard and alert-rule tests.
    --prometheus)
      { command -v prometheus && command -v promtool; } >/dev/null 2>&1 || missing+=(prometheus) ;;
    # PostgreSQL's server programs (Debian keeps them in /usr/lib/postgresql/*/bin).
    --postgres)
      compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
      command -v runuser >/dev/null 2>&1 || missing+=(util-linux) ;;
    *) command -v "$extra" >/dev/null 2>&1 || missing+=("$extra") ;;
  esac
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found. Install Rust with rustup (https://rustup.rs), then re-run." >&2
  exit 1
fi
if command -v rustup >/dev/null 2>&1; then
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
fi
