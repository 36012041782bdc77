// Package gcheadroom keeps a floor under the Go heap's growth between
// collections.
//
// With GOGC=100 the runtime collects whenever the heap has doubled since the
// last collection. A proxy's live heap is small (a few MB of cached tokens)
// and it allocates at a high rate (a few KB per request), so it collected
// about 17 times a second at 16k requests/s, and marking its live heap that
// often cost it about 3 µs per request: what separated it from a bare
// ReverseProxy, whose even smaller heap stays under the runtime's own 4 MB
// floor (docs/benchmarks.md). Keep raises the GC percent so that the next
// collection waits for at least headroom bytes of new allocation; once the
// live heap exceeds headroom the percent is the default 100 again, so a
// large heap (a million cached tenants) grows no more than it would anyway.
// The cost is memory: up to headroom bytes of garbage between collections.
package gcheadroom

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// DefaultHeadroom is the allocation a collection waits for at least.
const DefaultHeadroom = 32 << 20

// heapMinimum is the runtime's smallest heap goal at GOGC=100; it scales
// with the percent (4 MB × percent/100).
const heapMinimum = 4 << 20

// PercentFor returns the GC percent that puts the next collection at live +
// headroom bytes, never below the runtime's default of 100. The percent
// is capped where the runtime's heap minimum, which grows with it, would
// put the goal past live + headroom (a heap not yet measured, live 0,
// would otherwise ask for a goal of hundreds of MB).
func PercentFor(live, headroom uint64) int {
	p := uint64(100)
	if live > 0 {
		p = headroom * 100 / live
	}
	if lim := (live + headroom) * 100 / heapMinimum; live == 0 || p > lim {
		p = lim
	}
	if p < 100 {
		p = 100
	}
	return int(p)
}

// Keep sets the GC percent for headroom now and re-sets it every interval
// (as the live heap changes) until ctx ends. It does nothing and reports
// false when GOGC is set: the operator's choice stands. GOMEMLIMIT, when
// set, still makes the runtime collect before the limit, whatever the
// percent.
func Keep(ctx context.Context, headroom uint64, interval time.Duration) bool {
	if os.Getenv("GOGC") != "" {
		return false
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	last := -1
	apply := func() {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return // not this runtime's metric: leave the default
		}
		p := PercentFor(sample[0].Value.Uint64(), headroom)
		// Within a tenth of the last setting: not worth the heap lock.
		if last < 0 || p*10 < last*9 || p*10 > last*11 {
			debug.SetGCPercent(p)
			last = p
		}
	}
	apply()
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				apply()
			}
		}
	}()
	return true
}
