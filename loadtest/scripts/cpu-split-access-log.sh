#!/usr/bin/env bash
# User and system CPU time per request of coregate with and without an access log, closed loop:
# one `loadtest backend` and the generator on CPU 0, one coregate worker (driver io_uring) on
# CPU 1; per variant and round a 20,000-request warm-up, then `loadtest run -c 50 -n N`, with
# utime and stime of the coregate process read from /proc/PID/stat around it. Variants whose
# name starts with "none" have no log (list it twice to see the noise between two identical
# runs), "combined" and "json" log to OUTDIR/VARIANT.log (removed after each run).
#
# usage: loadtest/scripts/cpu-split-access-log.sh COREGATE LOADTEST OUTDIR [ROUNDS [N]]
#   VARIANTS="none none2 combined json" (default "none combined json") picks the variants.
set -euo pipefail
cg_bin=$1 lt=$2 out=$3 rounds=${4:-5} n=${5:-250000}
mkdir -p "$out"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
bport=$(port)
taskset -c 0 "$lt" backend --listen "127.0.0.1:$bport" --workers 1 > "$out/backend.log" 2>&1 &
bpid=$!
trap 'kill $bpid 2>/dev/null' EXIT
wait_port "$bport"
tick=$(getconf CLK_TCK)
for r in $(seq "$rounds"); do
  for v in ${VARIANTS:-none combined json}; do
    listen=$(port)
    case $v in
      none*) access='' ;;
      combined | json) access="access_log = { path = \"$out/$v.log\", format = \"$v\" }" ;;
      *) echo "unknown variant $v" >&2; exit 2 ;;
    esac
    cat > "$out/$v.toml" <<TOML
[runtime]
workers = 1
pin = false
driver = "io_uring"

[[listeners]]
name = "split"
address = "127.0.0.1:$listen"
$access

[[upstreams]]
name = "b"
balancer = "round_robin"
backends = [ { address = "127.0.0.1:$bport" } ]

[[routes]]
name = "all"
path_prefix = "/"
upstream = "b"
TOML
    taskset -c 1 "$cg_bin" run --config "$out/$v.toml" > "$out/$v.stderr" 2>&1 &
    cg=$!
    wait_port "$listen" || { echo "coregate ($v) did not listen; see $out/$v.stderr" >&2; exit 1; }
    taskset -c 0 "$lt" run "http://127.0.0.1:$listen/" -c 50 -n 20000 --quiet > /dev/null
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$cg/stat")
    taskset -c 0 "$lt" run "http://127.0.0.1:$listen/" -c 50 -n "$n" --quiet > /dev/null
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$cg/stat")
    kill -TERM "$cg"
    wait "$cg" || true
    rm -f "$out/$v.log"
    python3 -c "u=($u1-$u0)/$tick*1e6/$n; s=($s1-$s0)/$tick*1e6/$n; print(f'round $r $v user {u:.2f} sys {s:.2f} total {u+s:.2f} us/req')"
  done
done
