// Command benchload is the load benchmark's client and bookkeeper (see
// bench/run.sh and docs/benchmarks.md). Subcommands:
//
//	benchload freeport                 print a free loopback TCP port
//	benchload wait -url URL            wait until URL answers 200
//	benchload import -admin URL ...    import tenants through lsproxy's admin API
//	benchload run -url URL ...         put load on a proxy, print one JSON result line
//	benchload halfrate -in FILE ...    half the merged closed-loop req/s of one target
//	benchload report -dir DIR ...      tables and an SVG chart from a results directory
//	benchload bulkimport -admin URL    import many tenants through POST /admin/import (scale bench)
//	benchload ramp -url URL ...        a replica's cold start: ready, full speed, store reads/s
//	benchload drain ...                time a refresh storm at the emulator
//	benchload settle -redis ADDR       wait until the store's record reads calm down
//	benchload scalereport -dir DIR     the scale bench's tables
//
// run drives a fixed number of concurrent closed-loop clients (-concurrency)
// or a fixed request rate (-rate, open loop: latency is measured from each
// request's scheduled time, so a stalled proxy cannot hide queueing). Every
// request names a tenant (X-Tenant), chosen round-robin from -tenants or,
// with -zipf S, by a Zipf distribution of exponent S (tenant 0 the most
// requested, as real traffic is). It
// records a latency histogram and, for the processes given by -pids, CPU
// seconds (utime+stime from /proc/PID/stat) and peak RSS (VmHWM); with
// -redis it counts Redis commands (INFO commandstats) during the run.
//
// Files: main.go (subcommands), run.go (the load and its measurement),
// sample.go (CPU, RSS, Redis and emulator counters), hist.go (latency
// histogram), report.go (merging results, the Markdown report),
// report_input.go (reading results, metadata and go test -bench output),
// chart.go (the SVG chart), util.go (freeport, wait, import), scale.go
// (bulkimport, ramp, drain, settle: bench/scale.sh), scalereport.go (its tables).
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "freeport":
		err = freePortCmd()
	case "wait":
		err = waitCmd(args)
	case "import":
		err = importCmd(args)
	case "run":
		err = runCmd(args)
	case "report":
		err = reportCmd(args)
	case "halfrate":
		err = halfRateCmd(args)
	case "bulkimport":
		err = bulkImportCmd(args)
	case "ramp":
		err = rampCmd(args)
	case "drain":
		err = drainCmd(args)
	case "settle":
		err = settleCmd(args)
	case "scalereport":
		err = scaleReportCmd(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchload %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchload freeport | wait | import | run | halfrate | report | bulkimport | ramp | drain | settle | scalereport  (-h for flags)")
	os.Exit(2)
}

// tenantID is the id of tenant i; import and run must agree on it. Fixed
// width keeps every request the same size.
func tenantID(prefix string, i int) string { return fmt.Sprintf("%s%05d", prefix, i) }
