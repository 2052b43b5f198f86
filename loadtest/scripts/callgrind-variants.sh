#!/usr/bin/env bash
# Instructions per request of coregate's variants (rr, p2c, health, limit), measured with
# callgrind: one worker, driver io_uring, 3 `loadtest backend` processes. For each variant and
# N in (20000, 100000): `taskset -c 1 valgrind --tool=callgrind coregate run --exit-after 40s`
# driven by `taskset -c 0 loadtest run -c 50 -n N`; per request = (Ir(100k) - Ir(20k)) / 80000,
# which removes start-up and everything timer-driven (housekeeping, sync tick, health checks).
# Variants as `loadtest bench --coregate-variants`: rr = balancer "round_robin"; p2c; health = p2c
# and [upstreams.health] every 1s; limit = rr and a [[rate_limits]] table that never trips
# (client_ip, rate = 100000000 per 1s, mode = "sync") named by the route; limit-exact = the same
# limit in mode = "exact" (one shared atomic bucket per key: the accuracy baseline's cost);
# tls = rr behind a TLS listener (config/certs/edge-ecdsa.pem), driven over https:// keep-alive
# (TLS 1.3, X25519; the 50 handshakes are in both runs and cancel out). The gateway variants
# match `loadtest bench`: jwt = rr and JWT auth (HS256) on the route, requests carrying a valid
# token; transforms = rr and five header transforms on the route; routes1000 = rr and 1,000 more
# routes (/svcN/, half with JWT auth, half with the transforms) before the plain catch-all route
# the requests take.
#
# usage: loadtest/scripts/callgrind-variants.sh COREGATE LOADTEST OUTDIR [VARIANT...]
set -euo pipefail
coregate=$1 loadtest=$2 out=$3
shift 3
if [ $# -gt 0 ]; then variants=("$@"); else variants=(rr p2c health); fi
mkdir -p "$out"
secs=${EXIT_AFTER:-40}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

backends=()
for i in 1 2 3; do
  p=$(port)
  taskset -c 0 "$loadtest" backend --listen "127.0.0.1:$p" --workers 1 > "$out/backend$i.log" 2>&1 &
  pids+=($!)
  backends+=("127.0.0.1:$p")
done
sleep 1
list=$(printf '{ address = "%s" }, ' "${backends[@]}")
list="[ ${list%, } ]"

ir() { grep -E '^(summary|totals):' "$1" | tail -1 | awk '{print $2}'; }

jwt_auth=$'[[auth]]\nname = "bench"\nkind = "jwt"\nsecret = "loadtest-bench-secret-0123456789abcdef"\nissuer = "loadtest"\nforward_claims = { sub = "X-User" }\n'
bench_jwt=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaCIsImlzcyI6ImxvYWR0ZXN0IiwiZXhwIjo0MTAyNDQ0ODAwfQ.Q-s9782I42lwpAqc3FKiVRoIBT6NDdiY40NsZnIwmqI
transforms=$'[routes.request_headers]\nset = { "X-Client" = "$client_ip", "X-Env" = "bench" }\nadd = { "X-Via" = "coregate $method" }\nremove = ["X-Debug"]\n[routes.response_headers]\nset = { "Server" = "coregate" }\n'
never=$'[[rate_limits]]\nname = "never"\nkey = "client_ip"\nrate = 100000000\nperiod = "1s"\nmode = "sync"\n'

root=$(cd "$(dirname "$0")/../.." && pwd)
for v in "${variants[@]}"; do
  tables='' route='' tls='' scheme=http hdr=()
  case $v in
    rr) upstream='balancer = "round_robin"' extra='' ;;
    p2c) upstream='balancer = "p2c"' extra='' ;;
    health) upstream='balancer = "p2c"' extra=$'[upstreams.health]\npath = "/__health"\ninterval = "1s"\n' ;;
    limit) upstream='balancer = "round_robin"' extra='' tables=$never route='rate_limits = ["never"]' ;;
    limit-exact) upstream='balancer = "round_robin"' extra='' tables=${never/\"sync\"/\"exact\"} route='rate_limits = ["never"]' ;;
    tls) upstream='balancer = "round_robin"' extra='' scheme=https
      tls="[listeners.tls]
certificates = [ { cert = \"$root/config/certs/edge-ecdsa.pem\", key = \"$root/config/certs/edge-ecdsa.key\" } ]" ;;
    jwt) upstream='balancer = "round_robin"' extra='' tables=$jwt_auth route='auth = "bench"'
      hdr=(-H "Authorization: Bearer $bench_jwt") ;;
    transforms) upstream='balancer = "round_robin"' extra='' route=$transforms ;;
    routes1000) upstream='balancer = "round_robin"' extra='' tables=$jwt_auth
      for i in $(seq 0 999); do
        tables+=$'[[routes]]\n'"name = \"svc$i\""$'\n'"path_prefix = \"/svc$i/\""$'\nupstream = "backend"\n'
        if (( i % 2 == 0 )); then tables+=$'auth = "bench"\n'; else tables+=$transforms; fi
      done ;;
    *) echo "unknown variant $v" >&2; exit 2 ;;
  esac
  for n in 20000 100000; do
    listen=$(port)
    conf="$out/$v.toml"
    cat > "$conf" <<TOML
[runtime]
workers = 1
pin = false
driver = "io_uring"

[[listeners]]
name = "cg"
address = "127.0.0.1:$listen"
$tls
$tables
[[upstreams]]
name = "backend"
$upstream
backends = $list
[upstreams.pool]
max_idle = 1024
$extra
[[routes]]
name = "all"
path_prefix = "/"
upstream = "backend"
$route
TOML
    f="$out/callgrind.$v.$n"
    taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$f" \
      "$coregate" run --config "$conf" --exit-after "${secs}s" > "$out/$v.$n.log" 2>&1 &
    cg=$!
    for _ in $(seq 200); do
      (exec 3<>"/dev/tcp/127.0.0.1/$listen") 2>/dev/null && break
      sleep 0.1
    done
    taskset -c 0 "$loadtest" run "$scheme://127.0.0.1:$listen/" -k --tls-version 1.3 --tls-suite TLS13_AES_128_GCM_SHA256 -c 50 -n "$n" --quiet "${hdr[@]}" \
      --json "$out/run.$v.$n.json" > /dev/null
    errors=$(python3 -c "import json; print(json.load(open('$out/run.$v.$n.json'))['errors_total'])")
    wait "$cg"
    echo "$v n=$n Ir=$(ir "$f") errors=$errors"
  done
  a=$(ir "$out/callgrind.$v.20000") b=$(ir "$out/callgrind.$v.100000")
  echo "$v: $(( (b - a) / 80000 )) instructions per request" | tee -a "$out/summary.txt"
done
