#!/usr/bin/env bash
# Multi-node emulation on one Linux machine: 1 coordinator host and 4 worker
# hosts, each in its own network namespace, joined through a switch namespace
# by veth pairs, with `tc netem` shaping every host's link (rate + delay):
# scripts/netns-links.sh, which scripts/bench-step --link netns uses too.
# It then runs real distributed training across them (coordinator with
# --local-workers 0, one `worker --connect` per host) for N = 1, 2, 4 and
# records, per N, the all-reduce time per step and the images/s.
#
#   sudo bash scripts/netns-cluster.sh [--rate 1gbit] [--delay 0.1ms] [--workers 1,2,4] \
#        [--model resnet18] [--width 16] [--steps 6] [--out runs/netns-<rate>]
#
# Needs root (ip netns, tc), the built project (npx tsc -p tsconfig.json) and
# node. It only touches namespaces and links it creates (prefix "tfddp-"),
# and removes them on exit, also on failure or Ctrl-C.
set -euo pipefail

RATE=1gbit
DELAY=0.1ms
WORKERS=1,2,4
MODEL=resnet18
WIDTH=16
STEPS=6
BATCH=32
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) RATE="$2"; shift 2 ;;
    --delay) DELAY="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --width) WIDTH="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "netns-cluster: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-runs/netns-$RATE}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NODE=$(command -v node)
[ "$(id -u)" = 0 ] || { echo "netns-cluster: needs root for ip netns and tc; run it with sudo" >&2; exit 2; }
[ -f "$ROOT/dist/src/coordinator/cli.js" ] || { echo "netns-cluster: build first: npx tsc -p tsconfig.json" >&2; exit 2; }

PREFIX=tfddp
HOSTS=(coord w1 w2 w3 w4)
TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
LINKS="$ROOT/scripts/netns-links.sh"

# The hosts and their links: scripts/netns-links.sh (coord is 10.77.0.1,
# wK is 10.77.0.(K+1)). It prints the delay applied ("none" without netem).
trap 'bash "$LINKS" down "${HOSTS[@]}"' EXIT
trap 'exit 130' INT TERM
DELAY=$(bash "$LINKS" up "$RATE" "$DELAY" "${HOSTS[@]}")
echo "netns-cluster: 1 coordinator + 4 worker hosts on 10.77.0.0/24, links $RATE, delay $DELAY"

mkdir -p "$OUT"
SUMMARY="$OUT/summary.tsv"
printf 'workers\trate\tdelay\timages_per_s\tallreduce_ms\tforward_backward_ms\tallreduce_share\tworker_peak_rss_mb\tworker_tensors\tworker_tensor_mb\n' > "$SUMMARY"
# GNU time reports each worker process's peak RSS; without it the column says "n/a".
TIME=$(command -v /usr/bin/time || true)
for n in ${WORKERS//,/ }; do
  run="$OUT/n$n"
  rm -rf "$run"
  ip netns exec "$PREFIX-coord" env TFJS_DDP_TOKEN="$TOKEN" "$NODE" "$ROOT/dist/src/coordinator/cli.js" \
    --workers "$n" --local-workers 0 --host 10.77.0.1 --port 29500 --dashboard false \
    --model "$MODEL" --width "$WIDTH" --dataset synthetic --train-limit 4096 --test-limit 10 --epochs 1 \
    --batch-size "$BATCH" --per-worker-batch --max-steps $((STEPS + 1)) --backend wasm --no-plots --out "$run" \
    > "$OUT/coordinator-n$n.log" 2>&1 &
  coord=$!
  sleep 2
  pids=()
  for k in $(seq 1 "$n"); do
    rss=()
    [ -n "$TIME" ] && rss=("$TIME" -f %M -o "$OUT/worker$k-n$n.rss")
    ip netns exec "$PREFIX-w$k" env TFJS_DDP_TOKEN="$TOKEN" "${rss[@]}" "$NODE" "$ROOT/dist/src/worker/cli.js" \
      --connect 10.77.0.1:29500 --ring-host "10.77.0.$((k + 1))" --ring-port 29501 --no-cache \
      > "$OUT/worker$k-n$n.log" 2>&1 &
    pids+=($!)
  done
  wait "$coord" || { echo "netns-cluster: the N=$n run failed; see $OUT/coordinator-n$n.log" >&2; tail -5 "$OUT/coordinator-n$n.log" >&2; exit 1; }
  for p in "${pids[@]}"; do wait "$p" || true; done
  # "step time (...): forward+backward X ms, all-reduce Y ms (Z%), ..."
  line=$(grep 'step time' "$OUT/coordinator-n$n.log" | tail -1)
  fb=$(sed -E 's/.*forward\+backward ([0-9.]+) ms.*/\1/' <<<"$line")
  ar=$(sed -E 's/.*all-reduce ([0-9.]+) ms.*/\1/' <<<"$line")
  share=$(sed -E 's/.*all-reduce [0-9.]+ ms \(([0-9.]+)%\).*/\1/' <<<"$line")
  opt=$(sed -E 's/.*optimizer ([0-9.]+) ms.*/\1/' <<<"$line")
  # "memory: at most T live tensors (M MB) on any worker after a step"
  mem=$(grep 'live tensors' "$OUT/coordinator-n$n.log" | tail -1)
  tensors=$(sed -E 's/.*at most ([0-9]+) live tensors.*/\1/' <<<"$mem")
  tensor_mb=$(sed -E 's/.*live tensors \(([0-9.]+) MB\).*/\1/' <<<"$mem")
  peak=n/a
  [ -n "$TIME" ] && peak=$(cat "$OUT"/worker*-n"$n".rss | awk '/^[0-9]+$/ { if ($1 + 0 > m) m = $1 + 0 } END { printf "%.0f", m / 1024 }')
  ips=$(awk -v b="$BATCH" -v n="$n" -v f="$fb" -v a="$ar" -v o="$opt" 'BEGIN { printf "%.1f", 1000 * b * n / (f + a + o) }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$RATE" "$DELAY" "$ips" "$ar" "$fb" "$share" "$peak" "$tensors" "$tensor_mb" >> "$SUMMARY"
  echo "N=$n: $ips img/s, all-reduce $ar ms/step ($share% of the step), forward+backward $fb ms, worker peak RSS $peak MB, $tensors tensors ($tensor_mb MB)"
done
echo "netns-cluster: wrote $SUMMARY"
