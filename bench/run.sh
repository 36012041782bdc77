#!/usr/bin/env bash
# Load benchmark of lsproxy against a bare httputil.ReverseProxy (the
# ceiling) and nginx, on the same upstream with the same client load, in one
# run. Results: bench/results/ (raw and merged JSON lines, results.md,
# chart.svg, gobench.txt) and the marked section of docs/benchmarks.md.
#
#   bench/run.sh
#
# Needs go and redis-server; nginx is measured when installed. Settings (env):
#   BENCH_DURATION=10        seconds per measurement
#   BENCH_ROUNDS=4           interleaved slices per measurement (noise control)
#   BENCH_CONCURRENCY=32     closed-loop clients
#   BENCH_RATE_INFLIGHT=256  most requests in flight at the fixed rate
#   BENCH_TENANTS_SMALL=10  BENCH_TENANTS_LARGE=10000
#   BENCH_EXPIRING_TENANTS=100  BENCH_EXPIRING_TTL=5 (seconds an access token lives)
#   BENCH_GOVERNED_TENANTS=1000  tenants of the rate-limit governor scenario (0 skips it)
#   BENCH_GOVERNED_ONLY=0    1 runs only the rate-limit governor scenario
#   BENCH_GO=1               also run the Go benchmarks (proxy, auth)
#   BENCH_NGINX=1            0 skips nginx even when installed
#   BENCH_DEFAULT_CONFIG=1   0 skips the default-configuration scenario (issue 15)
#   BENCH_OUT=bench/results  BENCH_DOC=docs/benchmarks.md (empty: no doc update)
#
# Only processes this script starts are stopped, by pid, at exit.
set -euo pipefail

cd "$(dirname "$0")/.."
BENCH_NAME="bench"
# shellcheck source=bench/lib.sh
. bench/lib.sh
ROOT=$(pwd)
OUT=${BENCH_OUT:-$ROOT/bench/results}
DOC=${BENCH_DOC-$ROOT/docs/benchmarks.md}
DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-4}
CONC=${BENCH_CONCURRENCY:-32}
RATE_INFLIGHT=${BENCH_RATE_INFLIGHT:-256}
SMALL=${BENCH_TENANTS_SMALL:-10}
LARGE=${BENCH_TENANTS_LARGE:-10000}
EXP_TENANTS=${BENCH_EXPIRING_TENANTS:-100}
EXP_TTL=${BENCH_EXPIRING_TTL:-5}
GO_BENCH=${BENCH_GO:-1}
USE_NGINX=${BENCH_NGINX:-1}

command -v go >/dev/null || { echo "bench: go is required" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "bench: redis-server is required (apt-get install -y redis-server)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lsproxy-bench.XXXXXX")
BIN=$WORK/bin
STARTED=() # pids of every process started here

stop_all() {
	local p
	for p in "${STARTED[@]}"; do
		kill -CONT "$p" 2>/dev/null || true
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${STARTED[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	STARTED=()
}
on_exit() {
	local rc=$?
	stop_all
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
rm -f "$OUT/raw.jsonl" "$OUT/results.jsonl" "$OUT/gobench.txt" "$OUT/meta.txt"

# --- meta -------------------------------------------------------------------
NGINX_BIN=""
if [ "$USE_NGINX" = 1 ] && command -v nginx >/dev/null; then
	NGINX_BIN=$(command -v nginx)
fi
{
	echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
	echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
	echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
	echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "go: $(go env GOVERSION)"
	echo "redis: $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
	if [ -n "$NGINX_BIN" ]; then
		echo "nginx: $("$NGINX_BIN" -v 2>&1 | sed 's/.*nginx\///')"
	else
		echo "nginx: not measured (not installed or BENCH_NGINX=0)"
	fi
	echo "client: benchload on the same machine, $CONC closed-loop clients, up to $RATE_INFLIGHT in flight at the fixed rate, keep-alive"
	echo "method: ${DURATION} s per measurement as $ROUNDS interleaved slices (expiring tokens: 1) with the other proxies paused (SIGSTOP); before each slice up to 5 s wait for outside load below 0.25 cores, then 0.5 s warm-up; client and upstream GOMAXPROCS=1, proxies unrestricted"
} >"$OUT/meta.txt"
cat "$OUT/meta.txt" >&2

# --- shared upstream and token endpoint -----------------------------------
GOMAXPROCS=1 "$BIN/benchupstream" >"$WORK/upstream.out" 2>"$WORK/upstream.err" &
UP_PID=$!
STARTED+=("$UP_PID")
UP=$(first_line "$WORK/upstream.out")
UP_PORT=${UP##*:}

"$BIN/lsemulator" -control-listen 127.0.0.1:0 -access-ttl "${EXP_TTL}s" >"$WORK/emulator.out" 2>"$WORK/emulator.err" &
EMU_PID=$!
STARTED+=("$EMU_PID")
EMU=$(first_line "$WORK/emulator.out")
for i in $(seq 1 200); do
	[ "$(wc -l <"$WORK/emulator.out")" -ge 2 ] && break
	sleep 0.05 # waiting for the control URL line
done
EMU_CONTROL=$(sed -n 2p "$WORK/emulator.out" | cut -d' ' -f2)
TOKEN_PATH=/realms/k-series/protocol/openid-connect/token # emulator default mode: k-series

ENC_KEY=$(head -c 32 /dev/urandom | base64)
ADMIN_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')

# --- targets ----------------------------------------------------------------
# Each start_* sets URL[name], PIDS[name] (space-separated), and for Redis
# REDIS[name] and REDIS_PID[name]; lsproxy targets also CONTROL[name].
declare -A URL PIDS REDIS REDIS_PID CONTROL

start_bare() {
	rm -f "$WORK/bare.out" # a file left by the last scenario would race with the new one
	"$BIN/benchbaseline" -upstream "$UP" >"$WORK/bare.out" 2>"$WORK/bare.err" &
	PIDS[bare]=$!
	STARTED+=("$!")
	URL[bare]=$(first_line "$WORK/bare.out")
}

# start_nginx [NAME [ACCESS_LOG(0|1)]]
start_nginx() {
	local name=${1:-nginx} alog=${2:-0}
	local dir=$WORK/$name port master workers user="" access="access_log off;"
	[ "$alog" = 1 ] && access="access_log $dir/access.log combined buffer=64k flush=1s;"
	mkdir -p "$dir/tmp"
	chmod 755 "$WORK" "$dir" "$dir/tmp"
	port=$("$LOAD" freeport)
	[ "$(id -u)" = 0 ] && user="user root;"
	cat >"$dir/nginx.conf" <<EOF
$user
worker_processes auto;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
	$access
	client_body_temp_path $dir/tmp/body;
	proxy_temp_path $dir/tmp/proxy;
	upstream api { server 127.0.0.1:$UP_PORT; keepalive 256; }
	server {
		listen 127.0.0.1:$port;
		location / {
			proxy_pass http://api;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header X-Tenant "";
			proxy_set_header Cookie "";
			proxy_set_header Proxy-Authorization "";
			proxy_set_header Authorization "Bearer static-bench-token";
		}
	}
}
EOF
	"$NGINX_BIN" -p "$dir" -c "$dir/nginx.conf" >"$WORK/$name.out" 2>"$WORK/$name.err" &
	master=$!
	STARTED+=("$master")
	if ! "$LOAD" wait -url "http://127.0.0.1:$port/" -timeout 10s 2>>"$WORK/$name.err"; then
		log "nginx did not start; skipping it: $(tail -2 "$WORK/$name.err" "$dir/error.log" 2>/dev/null | tr '\n' ' ')"
		kill "$master" 2>/dev/null || true
		return 1
	fi
	workers=$(pgrep -P "$master" | tr '\n' ' ')
	PIDS[$name]="$master $workers"
	URL[$name]="http://127.0.0.1:$port"
}

# start_lsproxy NAME redis|embedded [extra VAR=value ...]
start_lsproxy() {
	local name=$1 kind=$2 p c rport=""
	shift 2
	p=$("$LOAD" freeport)
	c=$("$LOAD" freeport)
	local env=(
		"PATH=$PATH" "HOME=${HOME:-/tmp}"
		"LSPROXY_ENCRYPTION_KEY=$ENC_KEY" "LSPROXY_ADMIN_TOKEN=$ADMIN_TOKEN"
		"LSPROXY_CLIENT_ID=emulator-client" "LSPROXY_CLIENT_SECRET=emulator-secret"
		"LSPROXY_UPSTREAM_URL=$UP" "LSPROXY_TOKEN_URL=$EMU$TOKEN_PATH"
		"LSPROXY_LOG_LEVEL=warn" "LSPROXY_LISTEN=127.0.0.1:$p" "LSPROXY_CONTROL_LISTEN=127.0.0.1:$c"
	)
	if [ "$kind" = redis ]; then
		rport=$("$LOAD" freeport)
		redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
			>"$WORK/redis-$name.out" 2>"$WORK/redis-$name.err" &
		REDIS_PID[$name]=$!
		STARTED+=("$!")
		local i
		for i in $(seq 1 200); do
			redis-cli -p "$rport" ping >/dev/null 2>&1 && break
			sleep 0.05 # redis-server gives no readiness signal but PING
		done
		env+=("LSPROXY_REDIS_URL=redis://127.0.0.1:$rport/0")
		REDIS[$name]=127.0.0.1:$rport
	else
		mkdir -p "$WORK/data-$name"
		env+=("LSPROXY_DATA_DIR=$WORK/data-$name")
	fi
	env -i "${env[@]}" "$@" "$BIN/lsproxy" serve >"$WORK/$name.out" 2>"$WORK/$name.err" &
	PIDS[$name]=$!
	STARTED+=("$!")
	URL[$name]=http://127.0.0.1:$p
	CONTROL[$name]=http://127.0.0.1:$c
	"$LOAD" wait -url "${CONTROL[$name]}/healthz" -timeout 15s
}

pause() { kill -STOP ${PIDS[$1]}; }
resume() { kill -CONT ${PIDS[$1]}; }

# measure SCENARIO TARGET TENANTS MODE(closed|rate) RATE FIRST(1|0) ROUNDS
measure() {
	local scenario=$1 t=$2 n=$3 mode=$4 rate=$5 first=$6 rounds=$7
	local args=(-url "${URL[$t]}" -tenants "$n" -scenario "$scenario" -target "$t"
		-pids "${PIDS[$t]// /,}" -upstream-pids "$UP_PID" -aux-pids "$EMU_PID,${REDIS_PID[$t]:-}" -out "$OUT/raw.jsonl"
		-duration "$(awk -v d="$DURATION" -v r="$rounds" 'BEGIN { printf "%.3fs", d / r }')" -warmup 0.5s -quiet-wait 5s)
	[ "$first" = 1 ] || args+=(-warm-pass=false)
	if [ "$mode" = rate ]; then
		args+=(-rate "$rate" -concurrency "$RATE_INFLIGHT")
	else
		args+=(-concurrency "$CONC")
	fi
	[ -n "${REDIS[$t]:-}" ] && args+=(-redis "${REDIS[$t]}")
	[ -n "${CONTROL[$t]:-}" ] && args+=(-emulator-control "$EMU_CONTROL")
	resume "$t"
	GOMAXPROCS=1 "$LOAD" run "${args[@]}" >/dev/null
	pause "$t"
}

BASE_RATE=""

# scenario LABEL TENANTS EXPIRING(0|1) TARGET...
# With expiring tokens each measurement is one slice: a paused lsproxy's
# tokens all expire, so each slice starts with every tenant refreshing.
scenario() {
	local label=$1 n=$2 expiring=$3 t r mode rate first rounds=$ROUNDS
	shift 3
	[ "$expiring" = 1 ] && rounds=1
	local targets=()
	log "scenario: $label"
	for t in "$@"; do
		case $t in
		bare) start_bare ;;
		nginx) [ -n "$NGINX_BIN" ] && start_nginx || continue ;;
		# --- issue 15: the default configuration (info level, access log on) ---
		nginx-log) [ -n "$NGINX_BIN" ] && start_nginx nginx-log 1 || continue ;;
		lsproxy-redis-default)
			start_lsproxy "$t" redis "LSPROXY_LOG_LEVEL=info"
			"$LOAD" import -admin "${CONTROL[$t]}" -admin-token "$ADMIN_TOKEN" -tenants "$n" >&2
			;;
		# --- end issue 15 ---
		lsproxy-redis | lsproxy-embedded)
			local extra=()
			[ "$expiring" = 1 ] && extra=("LSPROXY_REFRESH_BEFORE=1s")
			start_lsproxy "$t" "${t#lsproxy-}" "${extra[@]}"
			if [ "$expiring" = 1 ]; then
				"$LOAD" import -admin "${CONTROL[$t]}" -admin-token "$ADMIN_TOKEN" -tenants "$n" \
					-grants "$EMU_CONTROL" -expires-in 2 -expires-spread "$EXP_TTL" >&2
			else
				"$LOAD" import -admin "${CONTROL[$t]}" -admin-token "$ADMIN_TOKEN" -tenants "$n" >&2
			fi
			;;
		esac
		targets+=("$t")
		pause "$t"
	done
	for mode in closed rate; do
		rate=0
		if [ "$mode" = rate ]; then
			if printf '%s\n' "${targets[@]}" | grep -qx bare; then
				rate=$("$LOAD" halfrate -in "$OUT/raw.jsonl" -scenario "$label")
				[ -n "$BASE_RATE" ] || BASE_RATE=$rate
			else
				rate=$BASE_RATE
			fi
			log "fixed rate: $rate req/s"
		fi
		for r in $(seq 1 "$rounds"); do
			for t in "${targets[@]}"; do
				first=0
				[ "$mode" = closed ] && [ "$r" = 1 ] && first=1
				measure "$label" "$t" "$n" "$mode" "$rate" "$first" "$rounds"
			done
		done
	done
	stop_scenario_targets
}

stop_scenario_targets() {
	# Everything but the shared upstream and emulator (the first two started).
	local keep=("${STARTED[@]:0:2}") p
	for p in "${STARTED[@]:2}"; do
		kill -CONT "$p" 2>/dev/null || true
		kill -TERM "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	STARTED=("${keep[@]}")
	unset URL PIDS REDIS REDIS_PID CONTROL
	declare -gA URL PIDS REDIS REDIS_PID CONTROL
}

grouped() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
TARGETS=(bare lsproxy-redis lsproxy-embedded nginx)
if [ "${BENCH_GOVERNED_ONLY:-0}" != 1 ]; then
	scenario "$(grouped "$SMALL") tenants" "$SMALL" 0 "${TARGETS[@]}"
	scenario "$(grouped "$LARGE") tenants" "$LARGE" 0 "${TARGETS[@]}"
	# --- issue 15: default configuration beside quiet, same run, alternating slices ---
	if [ "${BENCH_DEFAULT_CONFIG:-1}" = 1 ]; then
		scenario "$(grouped "$LARGE") tenants, default configuration (access log on)" "$LARGE" 0 \
			bare lsproxy-redis lsproxy-redis-default nginx-log
	fi
	# --- end issue 15 ---
	scenario "$(grouped "$EXP_TENANTS") tenants, tokens expiring (${EXP_TTL} s)" "$EXP_TENANTS" 1 lsproxy-redis lsproxy-embedded
fi

# --- rate-limit governor (issue 13; its own block) --------------------------
# Tenants whose upstream reports an R-Series bucket that never fills: every
# request is governed (one store step) and none is held, so this measures
# the governor's cost, against the bare proxy and against lsproxy with the
# governor off, all on the same upstream. BENCH_GOVERNED_TENANTS=0 skips it.
GOV_TENANTS=${BENCH_GOVERNED_TENANTS:-1000}
governed_scenario() {
	# UP and UP_PID are local: start_bare, start_lsproxy and measure see
	# this scenario's upstream (bash scoping is dynamic).
	local UP UP_PID label t r mode rate first
	local targets=(bare lsproxy-redis-ungoverned lsproxy-redis-governed lsproxy-embedded-governed)
	label="$(grouped "$GOV_TENANTS") tenants, rate-limit headers"
	GOMAXPROCS=1 "$BIN/benchupstream" -rate-limit-headers >"$WORK/gov-upstream.out" 2>"$WORK/gov-upstream.err" &
	UP_PID=$!
	STARTED+=("$UP_PID")
	UP=$(first_line "$WORK/gov-upstream.out")
	log "scenario: $label"
	start_bare
	pause bare
	for t in "${targets[@]:1}"; do
		case $t in
		lsproxy-redis-ungoverned) start_lsproxy "$t" redis LSPROXY_RATE_LIMIT=false ;;
		lsproxy-redis-governed) start_lsproxy "$t" redis ;;
		lsproxy-embedded-governed) start_lsproxy "$t" embedded ;;
		esac
		"$LOAD" import -admin "${CONTROL[$t]}" -admin-token "$ADMIN_TOKEN" -tenants "$GOV_TENANTS" >&2
		pause "$t"
	done
	for mode in closed rate; do
		rate=0
		if [ "$mode" = rate ]; then
			rate=$("$LOAD" halfrate -in "$OUT/raw.jsonl" -scenario "$label")
			log "fixed rate: $rate req/s"
		fi
		for r in $(seq 1 "$ROUNDS"); do
			for t in "${targets[@]}"; do
				first=0
				[ "$mode" = closed ] && [ "$r" = 1 ] && first=1
				measure "$label" "$t" "$GOV_TENANTS" "$mode" "$rate" "$first" "$ROUNDS"
			done
		done
	done
	stop_scenario_targets
}
[ "$GOV_TENANTS" -gt 0 ] && governed_scenario

stop_all

if [ "$GO_BENCH" = 1 ]; then
	log "Go benchmarks"
	go test -run '^$' -bench . -benchmem -benchtime 500ms -count 1 ./proxy ./auth | tee "$OUT/gobench.txt" >&2
fi

log "report"
"$LOAD" report -dir "$OUT" ${DOC:+-doc "$DOC"}
log "done: $OUT/results.md"
