#!/usr/bin/env bash
# Throughput of the plain proxy vs. hitting the upstream directly, in one run.
# Starts `licgate demo` (demo app + gateway with enforcement) on loopback, then drives
# the demo app directly and through the gateway with wrk, in interleaved rounds so
# machine drift affects both alike. Prints requests/s per round and the ratio.
#
# Usage: load/proxy-vs-direct.sh [ROUNDS] [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
seconds=${2:-10}
connections=${3:-64}
bin=target/release/licgate
command -v wrk >/dev/null || ./scripts/install-deps.sh wrk
[ -x "$bin" ] || cargo build --release

app=127.0.0.1:18000 gw=127.0.0.1:18080 admin=127.0.0.1:19901
"$bin" demo --app-listen "$app" --listen "$gw" --admin-listen "$admin" >/dev/null 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://$admin/readyz" >/dev/null && break; sleep 0.1; done

rps() { wrk -t2 -c"$connections" -d"${seconds}s" "http://$1/accounts/login/" | awk '/Requests\/sec/ {print $2}'; }
results=""
for r in $(seq "$rounds"); do
  d=$(rps "$app"); p=$(rps "$gw")
  echo "round $r: direct ${d} req/s, through licgate ${p} req/s"
  results+="$d $p"$'\n'
done
printf '%s' "$results" | awk '{ d += $1; p += $2; n++ }
  END { printf "mean: direct %.0f req/s, through licgate %.0f req/s, ratio %.2f\n", d / n, p / n, p / d }'
