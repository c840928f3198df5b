#!/usr/bin/env bash
# Replicated vs single-broker throughput on one machine (issue #20): a lookupd and three
# release brokerd on loopback, a topic with 1 replica and one with 3, `ferry bench writer`
# (MPUB batches) then `ferry bench reader` on each, alternately, ROUNDS times.
#
#   scripts/bench-replicas.sh [ROUNDS] [RUNFOR]        e.g. scripts/bench-replicas.sh 3 10s
#
# Needs `cargo build --release -p ferry-brokerd -p ferry-lookupd -p ferry-cli`. Extra flags
# for the writer go in WRITER_FLAGS (default: -c 4 --batch-size 200 --pipeline 4).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
runfor=${2:-10s}
writer_flags=${WRITER_FLAGS:--c 4 --batch-size 200 --pipeline 4}
bin=target/release
for b in brokerd lookupd ferry; do
  [[ -x $bin/$b ]] || { echo "$bin/$b missing: cargo build --release -p ferry-brokerd -p ferry-lookupd -p ferry-cli" >&2; exit 2; }
done
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

base=${BASE_PORT:-24150}
$bin/lookupd --tcp-address=127.0.0.1:$((base + 10)) --http-address=127.0.0.1:$((base + 11)) \
  >"$work/lookupd.log" 2>&1 &
pids+=($!)
for i in 0 1 2; do
  mkdir -p "$work/b$i"
  $bin/brokerd --data-path="$work/b$i" --broadcast-address=127.0.0.1 \
    --tcp-address=127.0.0.1:$((base + 3 * i)) --http-address=127.0.0.1:$((base + 3 * i + 1)) \
    --grpc-address=127.0.0.1:$((base + 3 * i + 2)) --lookupd-tcp-address=127.0.0.1:$((base + 10)) \
    >"$work/b$i.log" 2>&1 &
  pids+=($!)
done
http() { curl -sf -X POST "http://127.0.0.1:$1$2" >/dev/null; }
for _ in $(seq 100); do
  n=$(curl -sf "http://127.0.0.1:$((base + 11))/nodes" | grep -o '"http_port"' | wc -l || true)
  [[ $n == 3 ]] && break
  sleep 0.1
done
[[ $n == 3 ]] || { echo "lookupd does not list the three brokers" >&2; exit 1; }
http $((base + 1)) "/topic/create?topic=r1&replicas=1"
http $((base + 1)) "/topic/create?topic=r3&replicas=3"
leader=""
for _ in $(seq 100); do
  for i in 0 1 2; do
    if curl -sf "http://127.0.0.1:$((base + 3 * i + 1))/stats?format=json&topic=r3" | grep -q '"delivering":true'; then
      leader=$i
    fi
  done
  [[ -n $leader ]] && break
  sleep 0.1
done
[[ -n $leader ]] || { echo "no leader for r3" >&2; exit 1; }
# Both topics are published to and read from the broker that leads r3 (r1 lives on broker 0,
# which creates it; the writer of r1 goes there).
for topic in r1 r3; do
  http $((base + 1)) "/channel/create?topic=$topic&channel=bench" || true
done
echo "r3 leader: broker $leader; writer: $writer_flags; $runfor per run"
for round in $(seq "$rounds"); do
  for topic in r1 r3; do
    port=$((base + 3 * leader))
    [[ $topic == r1 ]] && port=$base
    w=$($bin/ferry bench writer --broker-tcp-address 127.0.0.1:$port --topic $topic $writer_flags --runfor "$runfor" 2>&1 | tail -1)
    n=$(grep -oE '^writer: [0-9,]+' <<<"$w" | tr -dc 0-9)
    # The reader consumes exactly what the writer published (and the backlog of earlier rounds
    # is already gone), so its rate is its own.
    r=$($bin/ferry bench reader --broker-tcp-address 127.0.0.1:$port --topic $topic --channel bench -c 4 --expect "$n" --runfor 120s 2>&1 | tail -1)
    echo "round $round $topic | $w | $r"
  done
done
