package gcheadroom

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercentFor(t *testing.T) {
	for _, c := range []struct {
		live, headroom uint64
		want           int
	}{
		{8 << 20, 32 << 20, 400},  // small heap: collect at live + 32 MiB
		{32 << 20, 32 << 20, 100}, // as large as the headroom: the default
		{1 << 30, 32 << 20, 100},  // large heap: never below the default
		{0, 32 << 20, maxPercent}, // empty heap: capped
		{1000, 32 << 20, maxPercent},
	} {
		if got := PercentFor(c.live, c.headroom); got != c.want {
			t.Errorf("PercentFor(%d, %d) = %d, want %d", c.live, c.headroom, got, c.want)
		}
	}
}

// currentPercent reads the GC percent (SetGCPercent returns the previous one).
func currentPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func TestKeepSetsPercentForLiveHeap(t *testing.T) {
	t.Setenv("GOGC", "")
	defer debug.SetGCPercent(currentPercent())
	runtime.GC() // a fresh live-heap figure
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if !Keep(ctx, 64<<20, time.Hour) {
		t.Fatal("Keep did nothing without GOGC")
	}
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	want := PercentFor(s[0].Value.Uint64(), 64<<20)
	if got := currentPercent(); got != want || got <= 100 {
		t.Fatalf("GC percent %d, want %d (> 100 for a test binary's small heap)", got, want)
	}
}

func TestKeepLeavesGOGCAlone(t *testing.T) {
	t.Setenv("GOGC", "150")
	prev := debug.SetGCPercent(150)
	defer debug.SetGCPercent(prev)
	if Keep(context.Background(), 64<<20, time.Hour) {
		t.Fatal("Keep ran although GOGC is set")
	}
	if got := currentPercent(); got != 150 {
		t.Fatalf("GC percent %d, want GOGC's 150", got)
	}
}
