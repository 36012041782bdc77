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
	// Whatever the live heap, the goal the runtime derives from the percent
	// (the larger of its scaled 4 MB minimum and live × (1 + p/100)) stays
	// within live + headroom, or live × 2 when that is larger.
	for live := uint64(0); live < 200<<20; live += 1 << 18 {
		p := uint64(PercentFor(live, 32<<20))
		goal := max(heapMinimum*p/100, live*(100+p)/100)
		if limit := max(live+32<<20, 2*live); goal > limit+limit/100 {
			t.Fatalf("live %d: percent %d makes a goal of %d, more than %d", live, p, goal, limit)
		}
	}
	for _, c := range []struct {
		live, headroom uint64
		want           int
	}{
		{8 << 20, 32 << 20, 400},  // small heap: collect at live + 32 MiB
		{32 << 20, 32 << 20, 100}, // as large as the headroom: the default
		{1 << 30, 32 << 20, 100},  // large heap: never below the default
		{0, 32 << 20, 800},        // not measured yet: the runtime's 4 MB minimum × 8 = 32 MiB
		{1000, 32 << 20, 800},     // nearly empty: capped the same way
		{3 << 20, 32 << 20, 875},  // 4 MB × 8.75 = 35 MiB = live + headroom
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
