package auth

import (
	"context"
	"testing"
	"time"
)

// listSignal reports each List on a channel.
type listSignal struct {
	countingStore
	listed chan struct{}
}

func (s *listSignal) List(ctx context.Context) ([]string, error) {
	ids, err := s.countingStore.List(ctx)
	select {
	case s.listed <- struct{}{}:
	default:
	}
	return ids, err
}

// Run times its full scans by the manager's clock, not the wall clock: a
// full scan follows when the clock seam passes FullScanEvery.
func TestRefresherRunFullScanFollowsClockSeam(t *testing.T) {
	f := newFixture(t)
	s := &listSignal{countingStore: countingStore{Store: f.store}, listed: make(chan struct{}, 1)}
	b := &BackgroundRefresher{Manager: f.m, Store: s, Interval: 5 * time.Millisecond, FullScanEvery: 10 * time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.Run(ctx) }()
	defer func() { cancel(); <-done }()

	wait := func(what string) {
		t.Helper()
		select {
		case <-s.listed:
		case <-time.After(10 * time.Second):
			t.Fatalf("no full scan %s", what)
		}
	}
	wait("at start")
	if n := s.lists.Load(); n != 1 {
		t.Fatalf("lists = %d before the clock moved, want 1", n)
	}
	f.clk.Advance(11 * time.Minute)
	wait("after the clock passed FullScanEvery")
}
