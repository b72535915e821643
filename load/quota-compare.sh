#!/usr/bin/env bash
# Throughput and p99 of the gateway with quotas off, local quotas, Redis quotas, and
# local quotas with the access log on, against mode = "off", in one run with
# interleaved rounds (wrk, loopback). Metrics are always on; the access log is off
# except in the last variant.
# Limits are set so high that nothing is refused: this measures the cost of counting.
#
# Usage: load/quota-compare.sh [ROUNDS] [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2} seconds=${2:-5} connections=${3:-32}
bin=$PWD/target/release/licgate
command -v wrk >/dev/null || ./scripts/install-deps.sh wrk
command -v redis-server >/dev/null || ./scripts/install-deps.sh redis-server
[ -x "$bin" ] || cargo build --release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin" license keygen --out "$work/keys" >/dev/null
issue() { "$bin" license issue --signing-key "$work/keys/vendor.key.pem" --tenant default --tier bench --days 30 "$@" 2>/dev/null; }
redis-server --port 16390 --bind 127.0.0.1 --save "" --appendonly no >/dev/null & pids+=($!)
"$bin" demo --app-listen 127.0.0.1:18000 --listen 127.0.0.1:18079 --admin-listen 127.0.0.1:19979 >/dev/null 2>&1 & pids+=($!)

start() { # name port mode license-args quota-section [access-log]
  local name=$1 port=$2 mode=$3 limits=$4 quota=$5 access=${6:-false}
  mkdir -p "$work/$name/store/licenses"
  issue $limits > "$work/$name/store/licenses/l.jwt"
  cat > "$work/$name/licgate.toml" <<CONF
mode = "$mode"
[server]
listen = "127.0.0.1:$port"
threads = 2
[upstream]
address = "127.0.0.1:18000"
[admin]
listen = "127.0.0.1:$((port + 1000))"
[license]
public_keys = [{ path = "$work/keys/vendor.pub.pem" }]
store_dir = "$work/$name/store"
[log]
level = "warn"
access = $access
$quota
CONF
  "$bin" serve --config "$work/$name/licgate.toml" 2>"$work/$name.log" & pids+=($!)
}
high="--limit requests_per_minute=1000000000 --limit burst=1000000000 --limit max_concurrent_connections=100000"
start off 18081 off "" ""
start no-quota 18082 enforce "" ""
start local 18083 enforce "$high" ""
start redis 18084 enforce "$high" $'[quota]\nbackend = "redis"\n[quota.redis]\nurl = "redis://127.0.0.1:16390"'
start local+log 18085 enforce "$high" "" true
for port in 19081 19082 19083 19084 19085 19979; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
done

run() { wrk -t2 -c"$connections" -d"${seconds}s" --latency "http://127.0.0.1:$1/api/x" | awk '/Requests\/sec/ {r=$2} /^ +99%/ {p=$2} END {print r, p}'; }
printf '%-10s %12s %10s\n' variant "req/s" p99
for r in $(seq "$rounds"); do
  for v in off:18081 no-quota:18082 local:18083 redis:18084 local+log:18085; do
    read -r rps p99 < <(run "${v#*:}")
    printf '%-10s %12s %10s   (round %s)\n' "${v%%:*}" "$rps" "$p99" "$r"
  done
done
echo "redis errors logged: $(grep -c 'redis quota backend unavailable' "$work/redis.log" || true)"
