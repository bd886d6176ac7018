#!/usr/bin/env bash
# Emulated hosts on one Linux machine, for scripts/netns-cluster.sh and
# scripts/bench-step --link netns: one network namespace per host, joined
# through a switch namespace (a bridge) by veth pairs, with `tc` shaping each
# host's link where it sends, so a frame crosses one shaped link
# (host -> switch -> host). Host k of the list (1-based) is namespace
# tfddp-<name> with eth0 at 10.77.0.k/24.
#
#   sudo bash scripts/netns-links.sh up <rate> <delay> <name>...   e.g. up 10gbit 0.05ms h1 h2
#   sudo bash scripts/netns-links.sh down <name>...
#
# `up` first removes leftovers of the same names, and on failure removes what
# it made. It prints one line on stdout: the delay applied, or "none" where
# the kernel has no sch_netem and a token bucket (burst: 1 ms at the rate)
# limits the rate only (said on stderr too). `down` kills the processes left in those namespaces and
# removes them and the switch. Needs root (ip netns, tc). Only namespaces
# and links named "tfddp-..." are touched.
set -Eeuo pipefail

PREFIX=tfddp
SWITCH=$PREFIX-sw

usage() { sed -n '9,10p' "$0" | sed 's/^# *//' >&2; exit 2; }

down() {
  for h in "$@"; do ip netns pids "$PREFIX-$h" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; done
  for h in "$@"; do ip netns del "$PREFIX-$h" 2>/dev/null || true; done
  ip netns del "$SWITCH" 2>/dev/null || true
}

# The token bucket's burst: 1 ms at the line rate, at least 64 KiB (one GSO
# segment). A fixed 1 MB burst let a small all-reduce pass unshaped at low
# rates (80 ms of a 100mbit link); 1mb where the rate does not parse.
burst() {
  awk -v r="$1" 'BEGIN {
    if (!match(tolower(r), /^[0-9]+(\.[0-9]+)?/)) { print "1mb"; exit }
    n = substr(r, 1, RLENGTH); u = tolower(substr(r, RLENGTH + 1))
    m = (u == "bit") ? 1 : (u == "kbit") ? 1e3 : (u == "mbit") ? 1e6 : (u == "gbit") ? 1e9 : (u == "tbit") ? 1e12 : 0
    if (m == 0) { print "1mb"; exit }
    b = n * m / 8 / 1000; if (b < 65536) b = 65536
    printf "%db\n", b
  }'
}

# Shapes what namespace $1 sends: netem gives rate + delay; kernels without
# sch_netem get a token bucket (rate only). Sets APPLIED to the delay applied.
shape() {
  if ip netns exec "$1" tc qdisc add dev eth0 root netem rate "$RATE" delay "$DELAY" limit 100000 2>/dev/null; then
    return
  fi
  ip netns exec "$1" tc qdisc add dev eth0 root tbf rate "$RATE" burst "$(burst "$RATE")" latency 100ms
  [ "$APPLIED" = none ] || echo "netns-links: this kernel has no netem: links limited to $RATE, delay $DELAY NOT applied" >&2
  APPLIED=none
}

up() {
  RATE=$1 DELAY=$2
  shift 2
  [ $# -gt 0 ] && [ $# -le 250 ] || usage
  APPLIED=$DELAY
  HOSTS=("$@")
  down "${HOSTS[@]}" # leftovers of an interrupted run
  trap 'down "${HOSTS[@]}"' ERR
  ip netns add "$SWITCH"
  ip -n "$SWITCH" link add br0 type bridge
  ip -n "$SWITCH" link set br0 up
  local i=1 h ns
  for h in "$@"; do
    ns=$PREFIX-$h
    ip netns add "$ns"
    ip link add "$PREFIX-$h-a" type veth peer name "$PREFIX-$h-b"
    ip link set "$PREFIX-$h-a" netns "$ns"
    ip link set "$PREFIX-$h-b" netns "$SWITCH"
    ip -n "$ns" link set "$PREFIX-$h-a" name eth0
    ip -n "$ns" addr add "10.77.0.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip -n "$SWITCH" link set "$PREFIX-$h-b" master br0
    ip -n "$SWITCH" link set "$PREFIX-$h-b" up
    shape "$ns"
    i=$((i + 1))
  done
  trap - ERR
  echo "$APPLIED"
}

[ $# -gt 0 ] || usage
[ "$(id -u)" = 0 ] || { echo "netns-links: needs root for ip netns and tc; run it with sudo" >&2; exit 2; }
command -v ip >/dev/null && command -v tc >/dev/null || { echo "netns-links: needs ip and tc (install iproute2)" >&2; exit 2; }
cmd=$1
shift
case "$cmd" in
  up) [ $# -ge 3 ] || usage; up "$@" ;;
  down) [ $# -ge 1 ] || usage; down "$@" ;;
  *) usage ;;
esac
