#!/usr/bin/env bash
# Proxy-level scale bench (issue 25): the real lsproxy binary with a real
# Redis at 10k, 100k and 1M tenants, a Zipf mix of tenants, alternating slices
# with the bare httputil proxy (benchbaseline) on the same upstream; then a
# replica's cold start against the same store; then refresh storms drained by
# 1, 2 and 4 replicas at the emulator with 150 ms token latency. Results:
# bench/results/scale/ (raw JSON lines, scale.md). docs/benchmarks.md ("A
# million tenants") quotes them; this script does not edit the docs.
#
#   bench/scale.sh                                   # everything (about 25 min)
#   BENCH_SCALE_SIZES=10000 BENCH_STORM_REPLICAS= bench/scale.sh   # one size, no storm
#   BENCH_SCALE_SIZES= BENCH_STORM_REPLICAS="1 2 4" bench/scale.sh  # storms only
#
# Needs go and redis-server. Settings (env):
#   BENCH_SCALE_SIZES="10000 100000 1000000"   tenants per size run (empty: none)
#   BENCH_DURATION=8         seconds per measurement (each mode), as BENCH_ROUNDS slices
#   BENCH_ROUNDS=4           alternating slices bare / lsproxy per measurement
#   BENCH_CONCURRENCY=32     closed-loop clients
#   BENCH_RATE_INFLIGHT=256  most requests in flight at the fixed rate (half bare's)
#   BENCH_ZIPF=1.1           Zipf exponent of the tenant mix (tenant 0 the most requested)
#   BENCH_TOKEN_LEN=1200     access token bytes (K-Series JWT size)
#   BENCH_SCALE_CACHE=256MiB LSPROXY_CACHE_MAX_BYTES of the replica
#   BENCH_SCALE_ENV=         more VAR=value for the replica, space-separated (e.g. GOMEMLIMIT=350MiB)
#   BENCH_WARM_ALL=1         request every tenant once before measuring (fills the
#                            bounded cache past its bound; 0: Zipf warm-up only)
#   BENCH_SETTLE=0           1: after the warm pass, wait (up to 10 min, replica idle) until its
#                            startup read of every record is over, so the slices measure the
#                            steady state (0: they include it, as a replica's first minutes do)
#   BENCH_COLD_SECONDS=30    how long the cold-start ramp loads the new replica
#   BENCH_STORM_REPLICAS="1 2 4"  replica counts of the storm runs (empty: none)
#   BENCH_STORM_TENANTS=100000    tenants all due at once
#   BENCH_STORM_LATENCY=150ms     token endpoint latency (emulator token-delay)
#   BENCH_STORM_CONCURRENCY=64    LSPROXY_REFRESHER_CONCURRENCY per replica
#   BENCH_STORM_TIMEOUT=300s      give up on a storm after this long
#   BENCH_OUT=bench/results/scale
#
# Only processes this script starts are stopped, by pid, at exit.
set -euo pipefail

cd "$(dirname "$0")/.."
BENCH_NAME="scale bench"
# shellcheck source=bench/lib.sh
. bench/lib.sh
ROOT=$(pwd)
OUT=${BENCH_OUT:-$ROOT/bench/results/scale}
SIZES=${BENCH_SCALE_SIZES-10000 100000 1000000}
DURATION=${BENCH_DURATION:-8}
ROUNDS=${BENCH_ROUNDS:-4}
CONC=${BENCH_CONCURRENCY:-32}
RATE_INFLIGHT=${BENCH_RATE_INFLIGHT:-256}
ZIPF=${BENCH_ZIPF:-1.1}
TOKEN_LEN=${BENCH_TOKEN_LEN:-1200}
CACHE=${BENCH_SCALE_CACHE:-256MiB}
read -r -a EXTRA_ENV <<<"${BENCH_SCALE_ENV:-}"
WARM_ALL=${BENCH_WARM_ALL:-1}
SETTLE=${BENCH_SETTLE:-0}
COLD_SECONDS=${BENCH_COLD_SECONDS:-30}
STORM_REPLICAS=${BENCH_STORM_REPLICAS-1 2 4}
STORM_TENANTS=${BENCH_STORM_TENANTS:-100000}
STORM_LATENCY=${BENCH_STORM_LATENCY:-150ms}
STORM_CONC=${BENCH_STORM_CONCURRENCY:-64}
STORM_TIMEOUT=${BENCH_STORM_TIMEOUT:-300s}

command -v go >/dev/null || { echo "scale bench: go is required" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "scale bench: redis-server is required" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lsproxy-scale.XXXXXX")
BIN=$WORK/bin
STARTED=() # pids of every process started here

stop_pids() {
	local p
	for p in "$@"; do
		kill -CONT "$p" 2>/dev/null || true
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "$@"; do
		wait "$p" 2>/dev/null || true
	done
}
on_exit() {
	local rc=$?
	stop_pids "${STARTED[@]}"
	if [ "$rc" -ne 0 ]; then
		tail_failed_logs "$rc"
	fi
	rm -rf "$WORK"
}
trap on_exit EXIT
trap 'exit 130' INT TERM


log "building"
mkdir -p "$BIN" "$OUT"
go build -o "$BIN/" ./cmd/lsproxy ./cmd/lsemulator ./bench/cmd/benchupstream ./bench/cmd/benchbaseline ./bench/cmd/benchload
LOAD=$BIN/benchload
rm -f "$OUT"/raw.jsonl "$OUT"/import.jsonl "$OUT"/coldstart.jsonl "$OUT"/storm.jsonl "$OUT"/scale.md
{
	echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
	echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
	echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
	echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "go: $(go env GOVERSION); redis: $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
	echo "method: Zipf s=$ZIPF over the tenants, ${TOKEN_LEN}-byte access tokens, $CONC closed-loop clients, ${DURATION} s per mode as $ROUNDS slices alternating bare / lsproxy (the other paused), then the fixed rate at half bare's; LSPROXY_CACHE_MAX_BYTES=$CACHE ${BENCH_SCALE_ENV:-}; warm pass over every tenant: $WARM_ALL; settle: $SETTLE; client and upstream GOMAXPROCS=1"
	echo "storm: $STORM_TENANTS tenants due at once (refresh token idle expiry within refresh_idle_margin), token latency $STORM_LATENCY, LSPROXY_REFRESHER_CONCURRENCY=$STORM_CONC per replica"
} >"$OUT/meta.txt"
cat "$OUT/meta.txt" >&2

ENC_KEY=$(head -c 32 /dev/urandom | base64)
ADMIN_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
TOKEN_PATH=/realms/k-series/protocol/openid-connect/token # emulator default mode: k-series

# start_emulator: EMU (token base URL), EMU_CONTROL, EMU_PID.
start_emulator() {
	rm -f "$WORK/emulator.out"
	"$BIN/lsemulator" -control-listen 127.0.0.1:0 -access-ttl 24h >"$WORK/emulator.out" 2>"$WORK/emulator.err" &
	EMU_PID=$!
	STARTED+=("$EMU_PID")
	EMU=$(first_line "$WORK/emulator.out")
	local i
	for i in $(seq 1 200); do
		[ "$(wc -l <"$WORK/emulator.out")" -ge 2 ] && break
		sleep 0.05 # waiting for the control URL line
	done
	EMU_CONTROL=$(sed -n 2p "$WORK/emulator.out" | cut -d' ' -f2)
}

# start_redis: REDIS (host:port), REDIS_PID; a fresh server without persistence.
start_redis() {
	local rport i
	rport=$("$LOAD" freeport)
	redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
		>"$WORK/redis.out" 2>"$WORK/redis.err" &
	REDIS_PID=$!
	STARTED+=("$REDIS_PID")
	for i in $(seq 1 200); do
		redis-cli -p "$rport" ping >/dev/null 2>&1 && break
		sleep 0.05 # redis-server gives no readiness signal but PING
	done
	REDIS=127.0.0.1:$rport
}

# spawn_lsproxy NAME [VAR=value ...]: starts a replica on $REDIS without
# waiting; sets LS_URL, LS_CONTROL, LS_PID, LS_STARTED_NS.
spawn_lsproxy() {
	local name=$1 p c
	shift
	p=$("$LOAD" freeport)
	c=$("$LOAD" freeport)
	LS_STARTED_NS=$(date +%s%N)
	env -i "PATH=$PATH" "HOME=${HOME:-/tmp}" \
		"LSPROXY_ENCRYPTION_KEY=$ENC_KEY" "LSPROXY_ADMIN_TOKEN=$ADMIN_TOKEN" \
		"LSPROXY_CLIENT_ID=emulator-client" "LSPROXY_CLIENT_SECRET=emulator-secret" \
		"LSPROXY_UPSTREAM_URL=$UP" "LSPROXY_TOKEN_URL=$EMU$TOKEN_PATH" \
		"LSPROXY_LOG_LEVEL=warn" "LSPROXY_LISTEN=127.0.0.1:$p" "LSPROXY_CONTROL_LISTEN=127.0.0.1:$c" \
		"LSPROXY_REDIS_URL=redis://$REDIS/0" "$@" \
		"$BIN/lsproxy" serve >"$WORK/$name.out" 2>"$WORK/$name.err" &
	LS_PID=$!
	STARTED+=("$LS_PID")
	LS_URL=http://127.0.0.1:$p
	LS_CONTROL=http://127.0.0.1:$c
}

forget() { # forget PID...: drop stopped pids from STARTED
	local keep=() p q drop
	for p in "${STARTED[@]}"; do
		drop=0
		for q in "$@"; do [ "$p" = "$q" ] && drop=1; done
		[ "$drop" = 1 ] || keep+=("$p")
	done
	STARTED=("${keep[@]}")
}

# --- shared upstream, bare proxy and emulator --------------------------------
GOMAXPROCS=1 "$BIN/benchupstream" >"$WORK/upstream.out" 2>"$WORK/upstream.err" &
UP_PID=$!
STARTED+=("$UP_PID")
UP=$(first_line "$WORK/upstream.out")
"$BIN/benchbaseline" -upstream "$UP" >"$WORK/bare.out" 2>"$WORK/bare.err" &
BARE_PID=$!
STARTED+=("$BARE_PID")
BARE=$(first_line "$WORK/bare.out")
kill -STOP "$BARE_PID"
start_emulator

grouped() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }

# measure TARGET N MODE RATE FIRST: one slice, the target resumed meanwhile.
measure() {
	local t=$1 n=$2 mode=$3 rate=$4 first=$5 url pids aux
	if [ "$t" = bare ]; then url=$BARE pids=$BARE_PID; else url=$LS_URL pids=$LS_PID; fi
	local args=(-url "$url" -tenants "$n" -zipf "$ZIPF" -scenario "$(grouped "$n") tenants" -target "$t"
		-pids "$pids" -upstream-pids "$UP_PID" -aux-pids "$REDIS_PID,$EMU_PID" -out "$OUT/raw.jsonl"
		-duration "$(awk -v d="$DURATION" -v r="$ROUNDS" 'BEGIN { printf "%.3fs", d / r }')" -warmup 1s -quiet-wait 5s)
	if [ "$first" = 1 ] && [ "$t" != bare ] && [ "$WARM_ALL" = 1 ]; then
		args+=(-warm-pass=true)
	else
		args+=(-warm-pass=false)
	fi
	if [ "$mode" = rate ]; then
		args+=(-rate "$rate" -concurrency "$RATE_INFLIGHT")
	else
		args+=(-concurrency "$CONC")
	fi
	[ "$t" = bare ] || args+=(-redis "$REDIS")
	kill -CONT "$pids"
	GOMAXPROCS=1 "$LOAD" run "${args[@]}" >/dev/null
	kill -STOP "$pids"
}

scale_size() {
	local n=$1 mode r rate t first full
	log "size $(grouped "$n"): redis, import through a replica of its own"
	start_redis
	# The import goes through a replica that then stops: its transient
	# memory (a few hundred MB while 5,000-line requests are decoded and
	# sealed) is not the serving replica's.
	spawn_lsproxy "import-$n" "LSPROXY_CACHE_MAX_BYTES=$CACHE" "${EXTRA_ENV[@]}"
	"$LOAD" wait -url "$LS_CONTROL/healthz" -timeout 15s
	"$LOAD" bulkimport -admin "$LS_CONTROL" -admin-token "$ADMIN_TOKEN" -tenants "$n" -token-len "$TOKEN_LEN" \
		-label "$n" -out "$OUT/import.jsonl" >/dev/null
	log "import replica peak RSS: $(sed -n 's/^VmHWM:[[:space:]]*//p' "/proc/$LS_PID/status"); redis used_memory: $(redis-cli -p "${REDIS##*:}" info memory | sed -n 's/^used_memory_human:\(.*\)\r$/\1/p')"
	stop_pids "$LS_PID"
	forget "$LS_PID"
	spawn_lsproxy "ls-$n" "LSPROXY_CACHE_MAX_BYTES=$CACHE" "${EXTRA_ENV[@]}"
	"$LOAD" wait -url "$LS_CONTROL/healthz" -timeout 15s
	if [ "$SETTLE" = 1 ]; then
		if [ "$WARM_ALL" = 1 ]; then
			log "warm pass: every tenant once"
			GOMAXPROCS=1 "$LOAD" run -url "$LS_URL" -tenants "$n" -concurrency "$CONC" -duration 1s -warmup 0s -quiet-wait 0s >/dev/null 2>&1
			WARM_ALL=done
		fi
		log "settle: waiting for the replica's startup store reads to end"
		"$LOAD" settle -redis "$REDIS"
	fi
	kill -STOP "$LS_PID"
	[ "$WARM_ALL" = 1 ] && log "first lsproxy slice requests every tenant once first"
	for mode in closed rate; do
		rate=0
		if [ "$mode" = rate ]; then
			rate=$("$LOAD" halfrate -in "$OUT/raw.jsonl" -scenario "$(grouped "$n") tenants")
			log "fixed rate: $rate req/s"
		fi
		for r in $(seq 1 "$ROUNDS"); do
			for t in bare lsproxy; do
				first=0
				[ "$mode" = closed ] && [ "$r" = 1 ] && first=1
				measure "$t" "$n" "$mode" "$rate" "$first"
			done
		done
	done
	kill -CONT "$LS_PID"
	curl -fsS --max-time 5 "$LS_CONTROL/metrics" 2>/dev/null | grep -E '^lsproxy_token_cache_(bytes|entries|evictions_total)' >&2 || true
	# Cold start: the warm replica goes; a new one starts against the
	# N-tenant store and gets the same load at once.
	full=$(($("$LOAD" halfrate -in "$OUT/raw.jsonl" -scenario "$(grouped "$n") tenants" -target lsproxy) * 2))
	stop_pids "$LS_PID"
	forget "$LS_PID"
	log "cold start (a warm replica did $full req/s)"
	spawn_lsproxy "cold-$n" "LSPROXY_CACHE_MAX_BYTES=$CACHE" "${EXTRA_ENV[@]}"
	GOMAXPROCS=1 "$LOAD" ramp -url "$LS_URL" -ready-url "$LS_CONTROL/readyz" -started-ns "$LS_STARTED_NS" \
		-tenants "$n" -zipf "$ZIPF" -concurrency "$CONC" -duration "${COLD_SECONDS}s" -full-rps "$full" \
		-redis "$REDIS" -pid "$LS_PID" -aux-pids "$UP_PID,$REDIS_PID,$EMU_PID" -label "$n" -out "$OUT/coldstart.jsonl" >/dev/null
	stop_pids "$LS_PID" "$REDIS_PID"
	forget "$LS_PID" "$REDIS_PID"
	[ "$WARM_ALL" = done ] && WARM_ALL=1
	return 0
}

for n in $SIZES; do
	scale_size "$n"
done

# --- storms ----------------------------------------------------------------
# STORM_TENANTS tenants with live emulator grants whose refresh tokens expire
# within refresh_idle_margin (48 h): every replica's first scan finds all of
# them due; claims share them. A fresh store and emulator per replica count.
storm() {
	local r=$1 i pids=() started
	log "storm: $(grouped "$STORM_TENANTS") tenants due, $r replica(s)"
	stop_pids "$EMU_PID"
	forget "$EMU_PID"
	start_emulator
	start_redis
	spawn_lsproxy "storm-import" "LSPROXY_REFRESHER_INTERVAL=1h"
	"$LOAD" wait -url "$LS_CONTROL/healthz" -timeout 15s
	"$LOAD" bulkimport -admin "$LS_CONTROL" -admin-token "$ADMIN_TOKEN" -tenants "$STORM_TENANTS" \
		-grants "$EMU_CONTROL" -refresh-expires-in 3600 -label "storm, $r replica(s)" -out "$OUT/import.jsonl" >/dev/null
	stop_pids "$LS_PID"
	forget "$LS_PID"
	curl -fsS -X POST "$EMU_CONTROL/token-delay?d=$STORM_LATENCY" >/dev/null
	started=$(date +%s%N)
	for i in $(seq 1 "$r"); do
		spawn_lsproxy "storm-$r-$i" "LSPROXY_REFRESHER_CONCURRENCY=$STORM_CONC"
		pids+=("$LS_PID")
	done
	"$LOAD" drain -emulator-control "$EMU_CONTROL" -want "$STORM_TENANTS" -started-ns "$started" \
		-timeout "$STORM_TIMEOUT" -redis "$REDIS" -label "$(grouped "$STORM_TENANTS") due, $r replica(s)" \
		-out "$OUT/storm.jsonl" >/dev/null
	stop_pids "${pids[@]}" "$REDIS_PID"
	forget "${pids[@]}" "$REDIS_PID"
}
for r in $STORM_REPLICAS; do
	storm "$r"
done

stop_pids "${STARTED[@]}"
STARTED=()
"$LOAD" scalereport -dir "$OUT"
log "done: $OUT/scale.md"
