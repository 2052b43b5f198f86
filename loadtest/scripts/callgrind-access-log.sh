#!/usr/bin/env bash
# Instructions per request of coregate builds with and without an access log, measured with
# callgrind: one worker, driver io_uring, one `loadtest backend` process (100-byte bodies). For
# each variant and N in (20000, 100000): `taskset -c 1 valgrind --tool=callgrind coregate run
# --exit-after 40s` driven by `taskset -c 0 loadtest run -c 50 -n N`; per request =
# (Ir(100k) - Ir(20k)) / 80000, which removes start-up and everything timer-driven.
#
# usage: loadtest/scripts/callgrind-access-log.sh LOADTEST OUTDIR NAME:COREGATE:LOG...
#   LOG is none, combined or json (json and combined write to OUTDIR/NAME.N.log).
# e.g.   ... target/release/loadtest /tmp/cg base:/tmp/coregate-old:none head:target/release/coregate:none \
#            combined:target/release/coregate:combined json:target/release/coregate:json
set -euo pipefail
loadtest=$1 out=$2
shift 2
mkdir -p "$out"
secs=${EXIT_AFTER:-40}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ir() { grep -E '^(summary|totals):' "$1" | tail -1 | awk '{print $2}'; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

bport=$(port)
taskset -c 0 "$loadtest" backend --listen "127.0.0.1:$bport" --workers 1 > "$out/backend.log" 2>&1 &
pids+=($!)
sleep 1

for spec in "$@"; do
  IFS=: read -r name coregate log <<< "$spec"
  for n in 20000 100000; do
    listen=$(port)
    case $log in
      none) access='' ;;
      combined|json) access="access_log = { path = \"$out/$name.$n.log\", format = \"$log\" }" ;;
      *) echo "unknown log $log" >&2; exit 2 ;;
    esac
    conf="$out/$name.toml"
    cat > "$conf" <<TOML
[runtime]
workers = 1
pin = false
driver = "io_uring"

[[listeners]]
name = "cg"
address = "127.0.0.1:$listen"
$access

[[upstreams]]
name = "backend"
balancer = "round_robin"
backends = [ { address = "127.0.0.1:$bport" } ]
[upstreams.pool]
max_idle = 1024

[[routes]]
name = "all"
path_prefix = "/"
upstream = "backend"
TOML
    f="$out/callgrind.$name.$n"
    taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$f" \
      "$coregate" run --config "$conf" --exit-after "${secs}s" > "$out/$name.$n.stderr" 2>&1 &
    cg=$!
    for _ in $(seq 200); do
      (exec 3<>"/dev/tcp/127.0.0.1/$listen") 2>/dev/null && break
      sleep 0.1
    done
    taskset -c 0 "$loadtest" run "http://127.0.0.1:$listen/" -c 50 -n "$n" --quiet \
      --json "$out/run.$name.$n.json" > /dev/null
    errors=$(python3 -c "import json; print(json.load(open('$out/run.$name.$n.json'))['errors_total'])")
    wait "$cg"
    lines=-
    [ "$log" != none ] && lines=$(wc -l < "$out/$name.$n.log")
    echo "$name n=$n Ir=$(ir "$f") errors=$errors log_lines=$lines"
  done
  a=$(ir "$out/callgrind.$name.20000") b=$(ir "$out/callgrind.$name.100000")
  echo "$name: $(( (b - a) / 80000 )) instructions per request" | tee -a "$out/summary.txt"
done
