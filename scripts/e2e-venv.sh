#!/usr/bin/env bash
# Creates (or brings up to date) the Python virtualenv of the end-to-end tests and the
# deploy/ checks: target/e2e-venv (or $LICGATE_E2E_VENV) with tests/e2e/requirements.txt.
# Does nothing when the requirements have not changed since the last install. Safe to
# run from several processes at once (flock).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${LICGATE_E2E_VENV:-$root/target/e2e-venv}"
requirements="$root/tests/e2e/requirements.txt"
mkdir -p "$(dirname "$venv")"

exec 9>"$venv.lock"
flock 9

wanted="$(sha256sum <"$requirements" | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$wanted" ]; then
  exit 0
fi

if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  "$root/scripts/install-deps.sh" --python
fi
echo "e2e-venv: installing $(grep -cv '^\s*\(#\|$\)' "$requirements") packages into $venv" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --requirement "$requirements"
echo "$wanted" >"$venv/.requirements"
