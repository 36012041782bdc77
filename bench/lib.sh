# Shell helpers shared by bench/run.sh and bench/scale.sh (sourced, not run).
# Set BENCH_NAME (the prefix of log and error lines) and WORK (the run's
# scratch directory) before calling them.

log() { printf '[%s %s] %s\n' "$BENCH_NAME" "$(date +%H:%M:%S)" "$*" >&2; }

# tail_failed_logs RC: after a failed run, the last lines of every
# process's stderr in $WORK.
tail_failed_logs() {
	local f
	echo "$BENCH_NAME: failed (exit $1); last log lines:" >&2
	for f in "$WORK"/*.err; do
		[ -s "$f" ] && { echo "== $(basename "$f")" >&2; tail -5 "$f" >&2; }
	done
}

# first_line FILE: the first line a just-started process printed (bounded wait).
first_line() {
	local i line
	for i in $(seq 1 200); do
		line=$(head -1 "$1" 2>/dev/null || true)
		if [ -n "$line" ]; then
			echo "$line"
			return 0
		fi
		sleep 0.05 # the process gives no other signal than its output
	done
	echo "$BENCH_NAME: no output in $1" >&2
	return 1
}
