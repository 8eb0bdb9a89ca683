#!/usr/bin/env bash
# Overload harness: does the STS refuse excess load fast and keep the admitted
# requests' latency bounded?
#
#   scripts/overload.sh            # from anywhere in the repository
#
# 1. Builds sts and stsbench into a temporary directory (never into the tree).
# 2. Writes a quickstart setup there (`sts quickstart --once`: CA and TLS
#    certificate, demo upstream, policy, embedded bbolt store) and serves it with
#    `sts serve` (the production path: GOGC 400, audit events to a file), adding
#    `limits:` with max_in_flight and shed_queue_delay when MAX_IN_FLIGHT or
#    SHED_QUEUE_DELAY are set.
# 3. Measures capacity: closed loop, CLOSED_CONCURRENCY connections, for
#    CAPACITY_DURATION after WARMUP.
# 4. Offers FACTOR x that capacity open-loop (ARRIVALS arrivals, a pool of POOL
#    connections, at most MAX_OUTSTANDING requests outstanding) for DURATION after
#    WARMUP.
# 5. Prints capacity, admitted throughput and p50/p99/p99.9, the limited (429)
#    count, rate and p50/p99, errors, and the server's CPU per admitted exchange,
#    and, from the STS's /metrics, the mean time an issued exchange spent in its
#    handler and the 429s by reason; then stops the server and removes the
#    directory (KEEP=1 keeps it, with both JSON reports, the metrics and the log).
#
# Settings (environment):
#   DURATION=10s            open-loop measured window
#   CAPACITY_DURATION=$DURATION  closed-loop measured window
#   WARMUP=2s               unrecorded load before each window
#   FACTOR=3                offered load as a multiple of the measured capacity
#   CLOSED_CONCURRENCY=8    connections of the capacity run
#   POOL=1024               open-loop connections (stsbench's maximum). HTTP/1.1
#                           carries one request per connection, so the pool must
#                           exceed the STS's in-flight bound (64 x its GOMAXPROCS
#                           by default) and cover rate x latency, or stsbench
#                           saturates first (reported as "not sent")
#   MAX_OUTSTANDING=$POOL   open-loop bound on requests sent or waiting
#   HTTP2=0                 N > 0: the client speaks HTTP/2 over N connections
#                           (the pool's workers share them, their requests
#                           multiplexed as streams; the capacity run uses
#                           min(N, CLOSED_CONCURRENCY)), as Go, gRPC-era and
#                           browser clients do; 0: HTTP/1.1, one request per
#                           connection at a time, as curl and Python's requests do
#   ARRIVALS=poisson        or uniform
#   MAX_IN_FLIGHT=          the STS's limits.max_in_flight (default: its own)
#   SHED_QUEUE_DELAY=       the STS's limits.shed_queue_delay (default: its own,
#                           50ms; e.g. 20ms, or -1s to turn the overload gate off)
#   TOKENS=1000             distinct subject tokens
#   LISTEN=127.0.0.1:18443  where the STS listens (127.0.0.1 or localhost)
#   METRICS_LISTEN=127.0.0.1:19090  the STS's metrics_listen (/metrics, plain HTTP)
#   SERVER_CPUS=, BENCH_CPUS=   taskset CPU lists to pin the STS and stsbench
#                           (e.g. SERVER_CPUS=0 BENCH_CPUS=1); GOMAXPROCS follows
#   SERVER_CPU_QUOTA=       percent of one CPU the STS may use (a CFS quota, as a
#                           Kubernetes CPU limit sets; needs a writable cgroup
#                           v1 cpu controller or cgroup v2 cpu.max). On a small
#                           machine this keeps the STS, not stsbench, the
#                           bottleneck: e.g. SERVER_CPUS=0 SERVER_CPU_QUOTA=50
#   PRIORITY=0              1: on a machine shared with other work, run both
#                           processes at nice -20 and give the STS's cgroup
#                           (SERVER_CPU_QUOTA) and one for stsbench the highest
#                           CPU weight, so that the quota is a budget the STS
#                           gets, not only a limit, and the generator keeps up
#                           (needs root; the figures then say what the STS does
#                           with that budget, not what the neighbours leave it)
#   KEEP=0                  1: keep the temporary directory
#
# Needs go, jq and curl. Run it on a quiet machine: the figures are only as good
# as the CPU the two processes get (see docs/benchmarks.md, "Overload").
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in go jq curl; do
  command -v "$tool" >/dev/null || { echo "overload.sh: needs $tool" >&2; exit 2; }
done

DURATION=${DURATION:-10s}
CAPACITY_DURATION=${CAPACITY_DURATION:-$DURATION}
WARMUP=${WARMUP:-2s}
FACTOR=${FACTOR:-3}
CLOSED_CONCURRENCY=${CLOSED_CONCURRENCY:-8}
ARRIVALS=${ARRIVALS:-poisson}
MAX_IN_FLIGHT=${MAX_IN_FLIGHT:-}
SHED_QUEUE_DELAY=${SHED_QUEUE_DELAY:-}
TOKENS=${TOKENS:-1000}
LISTEN=${LISTEN:-127.0.0.1:18443}
METRICS_LISTEN=${METRICS_LISTEN:-127.0.0.1:19090}
SERVER_CPUS=${SERVER_CPUS:-}
SERVER_CPU_QUOTA=${SERVER_CPU_QUOTA:-}
BENCH_CPUS=${BENCH_CPUS:-}
KEEP=${KEEP:-0}
PRIORITY=${PRIORITY:-0}

server_pin=() bench_pin=()
[[ -n $SERVER_CPUS ]] && server_pin=(taskset -c "$SERVER_CPUS")
[[ -n $BENCH_CPUS ]] && bench_pin=(taskset -c "$BENCH_CPUS")
if [[ $PRIORITY == 1 ]]; then
  server_pin=(nice -n -20 "${server_pin[@]}")
  bench_pin=(nice -n -20 "${bench_pin[@]}")
fi
POOL=${POOL:-1024}
HTTP2=${HTTP2:-0}
MAX_OUTSTANDING=${MAX_OUTSTANDING:-$POOL}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/safeconduct-overload.XXXXXX")
pid=""
cgroup=""
bench_cgroup=""
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  [[ -n $cgroup ]] && rmdir "$cgroup" 2>/dev/null || true
  [[ -n $bench_cgroup ]] && rmdir "$bench_cgroup" 2>/dev/null || true
  if [[ $KEEP == 1 ]]; then
    echo "overload.sh: kept $tmp (closed.json, open.json, metrics-*.txt, sts.log, qs/)" >&2
  else
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building sts and stsbench into $tmp" >&2
go build -o "$tmp/sts" ./cmd/sts
go build -o "$tmp/stsbench" ./cmd/stsbench

qs=$tmp/qs
if ! "$tmp/sts" quickstart --dir "$qs" --listen "$LISTEN" --once >"$tmp/quickstart.log" 2>&1; then
  cat "$tmp/quickstart.log" >&2
  exit 1
fi
limits=()
[[ -n $MAX_IN_FLIGHT ]] && limits+=("max_in_flight: $MAX_IN_FLIGHT")
[[ -n $SHED_QUEUE_DELAY ]] && limits+=("shed_queue_delay: $SHED_QUEUE_DELAY")
{
  ((${#limits[@]} > 0)) && printf 'limits: {%s}\n' "$(printf '%s, ' "${limits[@]}" | sed 's/, $//')"
  echo "audit: {path: audit.jsonl}"
  echo "metrics_listen: $METRICS_LISTEN"
} >>"$qs/sts.yaml"
base="https://127.0.0.1:${LISTEN##*:}"

"${server_pin[@]}" "$tmp/sts" serve --config "$qs/sts.yaml" 2>"$tmp/sts.log" &
pid=$!   # nice and taskset exec the STS: the same process
for ((i = 0; ; i++)); do
  curl -fsS --cacert "$qs/ca.crt" "$base/readyz" >/dev/null 2>&1 && break
  if ! kill -0 "$pid" 2>/dev/null || ((i >= 300)); then
    echo "overload.sh: the STS did not become ready at $base" >&2
    cat "$tmp/sts.log" >&2
    exit 1
  fi
  sleep 0.1
done
if [[ -n $SERVER_CPU_QUOTA ]]; then
  # 10 ms periods: a quota of Q% lets the STS run Q/10 ms in each.
  quota_us=$((SERVER_CPU_QUOTA * 100))
  if [[ -w /sys/fs/cgroup/cpu ]]; then
    cgroup=/sys/fs/cgroup/cpu/safeconduct-overload-$$
    mkdir "$cgroup"
    echo 10000 >"$cgroup/cpu.cfs_period_us"
    echo "$quota_us" >"$cgroup/cpu.cfs_quota_us"
    [[ $PRIORITY == 1 ]] && echo 262144 >"$cgroup/cpu.shares"
    for t in /proc/"$pid"/task/*; do echo "${t##*/}" >"$cgroup/tasks"; done
  elif [[ -w /sys/fs/cgroup/cgroup.subtree_control ]]; then
    cgroup=/sys/fs/cgroup/safeconduct-overload-$$
    mkdir "$cgroup"
    echo "$quota_us 10000" >"$cgroup/cpu.max"
    [[ $PRIORITY == 1 ]] && echo 10000 >"$cgroup/cpu.weight"
    echo "$pid" >"$cgroup/cgroup.procs"
  else
    echo "overload.sh: SERVER_CPU_QUOTA needs a writable cgroup cpu controller" >&2
    exit 2
  fi
fi
if [[ $PRIORITY == 1 ]]; then
  # stsbench's own cgroup, no quota, the highest weight: it runs in it (the
  # wrapper shell moves itself in, then execs it).
  if [[ -w /sys/fs/cgroup/cpu ]]; then
    bench_cgroup=/sys/fs/cgroup/cpu/safeconduct-overload-bench-$$
    mkdir "$bench_cgroup" && echo 262144 >"$bench_cgroup/cpu.shares"
    bench_pin=(sh -c 'echo $$ >"$0/tasks" && exec "$@"' "$bench_cgroup" "${bench_pin[@]}")
  elif [[ -w /sys/fs/cgroup/cgroup.subtree_control ]]; then
    bench_cgroup=/sys/fs/cgroup/safeconduct-overload-bench-$$
    mkdir "$bench_cgroup" && echo 10000 >"$bench_cgroup/cpu.weight"
    bench_pin=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$bench_cgroup" "${bench_pin[@]}")
  fi
fi
echo "STS pid $pid at $base${SERVER_CPU_QUOTA:+, CPU quota $SERVER_CPU_QUOTA%}${MAX_IN_FLIGHT:+, max_in_flight $MAX_IN_FLIGHT}${SHED_QUEUE_DELAY:+, shed_queue_delay $SHED_QUEUE_DELAY}${SERVER_CPUS:+, CPUs $SERVER_CPUS}" >&2

common=(--quickstart "$qs" --sts "$base" --pid "$pid" --warmup "$WARMUP" --tokens "$TOKENS" --json)

# bench NAME ARGS...: runs stsbench, its JSON report into $tmp/NAME.json. A run
# with failed requests still reports (exit 1); anything else stops the harness.
bench() {
  local name=$1 rc=0
  shift
  "${bench_pin[@]}" "$tmp/stsbench" "${common[@]}" "$@" >"$tmp/$name.json" 2>"$tmp/$name.err" || rc=$?
  if [[ ! -s $tmp/$name.json ]]; then
    echo "overload.sh: $name run failed (exit $rc)" >&2
    cat "$tmp/$name.err" >&2
    exit 1
  fi
  [[ -s $tmp/$name.err ]] && sed "s/^/  $name: /" "$tmp/$name.err" >&2
  return 0
}

echo "capacity: closed loop, $CLOSED_CONCURRENCY connections, $CAPACITY_DURATION" >&2
bench closed --concurrency "$CLOSED_CONCURRENCY" --duration "$CAPACITY_DURATION" \
  --http2 "$((HTTP2 < CLOSED_CONCURRENCY ? HTTP2 : CLOSED_CONCURRENCY))"
capacity=$(jq -r '.throughput_ok_per_s' "$tmp/closed.json")
rate=$(jq -n --argjson c "$capacity" --argjson f "$FACTOR" '$c * $f | floor')
if ((rate < 1)); then
  echo "overload.sh: measured capacity $capacity/s; nothing to overload" >&2
  exit 1
fi

metrics() { curl -fsS "http://$METRICS_LISTEN/metrics" >"$tmp/$1"; }
# metric FILE SERIES: the value of SERIES (name{labels} exactly) in FILE, 0 if absent.
metric() { awk -v k="$2" '$1 == k { v = $2 } END { print v + 0 }' "$tmp/$1"; }

proto="$POOL HTTP/1.1 connections"
((HTTP2 > 0)) && proto="$POOL workers on $HTTP2 HTTP/2 connections"
echo "overload: open loop, $rate/s ($FACTOR x capacity, $ARRIVALS), $proto, $DURATION" >&2
metrics metrics-before.txt
bench open --rate "$rate" --arrivals "$ARRIVALS" --concurrency "$POOL" \
  --max-outstanding "$MAX_OUTSTANDING" --duration "$DURATION" --http2 "$HTTP2"
metrics metrics-after.txt
# Recovery: how long after the open-loop run the overload gate's shed ratio is 0
# again (read every 100 ms, for up to 3 s).
recovered=""
for ((i = 0; i <= 30; i++)); do
  metrics metrics-recovery.txt
  if [[ $(metric metrics-recovery.txt safeconduct_overload_shed_ratio) == 0 ]]; then
    recovered="$((i * 100)) ms"
    break
  fi
  sleep 0.1
done

# Numbers: rates as integers, latencies in ms with 2 decimals, CPU in µs.
ms='(. / 10 | round) / 100'
jq -r --argjson cap "$capacity" "
  def ms: $ms;
  def pct(a; b): if b > 0 then (a * 100 / b | round) else 0 end;
  def conns: if .http2_connections then \"\(.concurrency) workers on \(.http2_connections) HTTP/2 connections\" else \"\(.concurrency) HTTP/1.1 connections\" end;
  \"capacity (closed loop, \(conns)): \(\$cap | round) ok/s, p99 \(.latency_us.p99 | ms) ms, \" +
    \"server \(.server_cpu.per_request_us | round) µs CPU per exchange\"
" "$tmp/closed.json"
jq -r --argjson cap "$capacity" "
  def ms: $ms;
  def pct(a; b): if b > 0 then (a * 100 / b | round) else 0 end;
  def conns: if .http2_connections then \"\(.concurrency) workers on \(.http2_connections) HTTP/2 connections\" else \"\(.concurrency) HTTP/1.1 connections\" end;
  .open_loop as \$o |
  \"offered (open loop, \(\$o.arrivals), \(conns)): \(\$o.rate_per_s | round)/s target, \" +
    \"\(\$o.offered_per_s | round)/s scheduled, \(\$o.sent) sent, \(\$o.not_sent_client_saturated) not sent (client saturated), \" +
    \"send delay p99 \(\$o.send_delay_us.p99 | ms) ms\",
  \"admitted (200): \(.throughput_ok_per_s | round)/s (\(pct(.throughput_ok_per_s; \$cap))% of capacity), \" +
    \"p50 \(.latency_us.p50 | ms) ms, p99 \(.latency_us.p99 | ms) ms, p99.9 \(.latency_us.p99_9 | ms) ms, max \(.latency_us.max | ms) ms\",
  \"limited (429): \(.limited) in \(.duration_s * 10 | round / 10) s (\(.limited_per_s | round)/s, \" +
    \"\(pct(.limited; .open_loop.sent))% of sent), p50 \(.latency_limited_us.p50 | ms) ms, p99 \(.latency_limited_us.p99 | ms) ms\",
  \"errors: \(.errors)\" + (if .errors > 0 then \" \(.errors_by_kind)\" else \"\" end),
  \"server CPU: \(.server_cpu.per_request_us | round) µs per admitted exchange (\(.server_cpu.util_pct | round)% of a core)\",
  # What a 429 costs: the open-loop CPU less the admitted exchanges at the
  # capacity run's cost, over the 429s (an estimate: it also carries what the
  # larger connection pool costs).
  (if .limited > 0 then
     ((.server_cpu.seconds * 1e6 - .ok * \$xcost) / .limited) as \$y |
     \"server CPU per 429: about \(\$y | round) µs (\(pct(\$y; \$xcost))% of an exchange at capacity)\"
   else empty end),
  \"stsbench CPU: \(.generator_cpu.util_pct | round)% of a core (\(.generator_cpu.per_request_us | round) µs per request)\"
" --argjson xcost "$(jq -r '.server_cpu.per_request_us' "$tmp/closed.json")" "$tmp/open.json"

# The STS's own view of the open-loop run (its warmup included): the mean time an
# issued exchange spent in the handler, after the in-flight limit admitted it; the
# rest of the admitted latency was spent before (connection, TLS, queueing for
# CPU). And its refusals by reason.
delta() { awk -v a="$(metric metrics-after.txt "$1")" -v b="$(metric metrics-before.txt "$1")" 'BEGIN { print a - b }'; }
sum=$(delta 'safeconduct_exchange_duration_seconds_sum{outcome="issued"}')
count=$(delta 'safeconduct_exchange_duration_seconds_count{outcome="issued"}')
refusals=$(awk '$1 ~ /^safeconduct_rate_limited_total\{/ { print $1 }' "$tmp/metrics-after.txt" | while read -r series; do
  printf ' %s %s' "$(sed 's/.*reason="\([^"]*\)".*/\1/' <<<"$series")" "$(delta "$series")"
done)
awk -v s="$sum" -v c="$count" -v r="$refusals" 'BEGIN {
  printf "server side: %s issued, mean %.2f ms in the handler per issued exchange; 429s by reason:%s\n", c, (c > 0 ? s / c * 1000 : 0), r
}'
echo "recovery: overload shed ratio $(metric metrics-after.txt safeconduct_overload_shed_ratio) when the run ended, 0 ${recovered:+after }${recovered:-not within 3 s}"

jq -r '
  .open_loop as $o |
  (if $o.not_sent_client_saturated > 0 then
     "WARNING: \($o.not_sent_client_saturated) arrivals were not sent: stsbench, not the STS, was saturated; raise POOL/MAX_OUTSTANDING or give it a CPU (BENCH_CPUS)"
   else empty end),
  (if $o.offered_per_s < 0.95 * $o.rate_per_s then
     "WARNING: only \($o.offered_per_s | round)/s of \($o.rate_per_s | round)/s were scheduled"
   else empty end)
' "$tmp/open.json" >&2

# Failed requests (anything but a valid 200 or 429) fail the harness.
[[ $(jq -r '.errors' "$tmp/closed.json") == 0 && $(jq -r '.errors' "$tmp/open.json") == 0 ]] || exit 1
