package auth

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/store"
)

// flagHoldStore holds the write that flags tenant id, once, after it is
// stored: reached is closed, then it waits for release.
type flagHoldStore struct {
	store.Store
	id               string
	reached, release chan struct{}
	once             sync.Once
}

func (s *flagHoldStore) Put(ctx context.Context, t *store.Tenant, expect int64) (int64, error) {
	v, err := s.Store.Put(ctx, t, expect)
	if err == nil && t.ID == s.id && t.Status == store.StatusReauthorizationRequired {
		s.once.Do(func() {
			close(s.reached)
			<-s.release
		})
	}
	return v, err
}

// TestGuardTripDuringFlagWrite: the guard trips while a tenant's flag is
// being written (so the trip's revert list does not have it yet). The
// writer reverts its own flag: no tenant stays flagged by a tripped guard,
// and the tenant answers token_unavailable with its refresh token kept.
func TestGuardTripDuringFlagWrite(t *testing.T) {
	var opts ManagerOptions
	f := newFixture(t, func(o *ManagerOptions) {
		o.GuardThreshold, o.GuardWindow = 3, time.Minute
		opts = *o
	})
	hs := &flagHoldStore{Store: f.store, id: "x", reached: make(chan struct{}), release: make(chan struct{})}
	f.m = NewManager(hs, f.ref, opts)
	f.ref.next = func(*store.Tenant) (*Grant, error) { return nil, &EndpointError{Status: 400, Code: "invalid_grant"} }
	for _, id := range []string{"x", "y", "z"} {
		f.put(t, id, -time.Second)
	}
	xErr := make(chan error, 1)
	go func() {
		_, err := f.m.Token(ctx, "x") // first rejection: flagged, write held
		xErr <- err
	}()
	select {
	case <-hs.reached:
	case <-time.After(10 * time.Second):
		t.Fatal("x's flag was not written")
	}
	if _, err := f.m.Token(ctx, "y"); !errors.Is(err, ErrReauthorizationRequired) {
		t.Fatalf("y (second rejection, guard not tripped): %v, want reauthorization_required", err)
	}
	if _, err := f.m.Token(ctx, "z"); !errors.Is(err, ErrTokenUnavailable) {
		t.Fatalf("z (third rejection, trips the guard): %v, want token_unavailable", err)
	}
	close(hs.release)
	select {
	case err := <-xErr:
		if !errors.Is(err, ErrTokenUnavailable) {
			t.Fatalf("x after the trip: %v, want token_unavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("x's Token did not return")
	}
	for _, id := range []string{"x", "y", "z"} {
		if rec := f.get(t, id); rec.Status != store.StatusActive || rec.RefreshToken != "rt-"+id+"-0" {
			t.Errorf("%s: status %s reason %q: want active with its refresh token", id, rec.Status, rec.Reason)
		}
	}
}

// TestGuardFlaggedAtAfterTrip: flaggedAt refuses a flag whose verdict came
// before a trip (the caller reverts it), and records one after none.
func TestGuardFlaggedAtAfterTrip(t *testing.T) {
	g := &grantGuard{threshold: 2, window: time.Minute}
	now := time.Now()
	a := g.rejectedGrant("a", now)
	if !a.flag || !g.flaggedAt("a", now, a.trips) {
		t.Fatalf("a: verdict %+v, flag not recorded", a)
	}
	b := g.rejectedGrant("b", now) // the second tenant trips it
	if b.flag || len(b.unflag) != 1 {
		t.Fatalf("b: verdict %+v; want tripped, a to unflag", b)
	}
	g2 := &grantGuard{threshold: 2, window: time.Minute}
	c := g2.rejectedGrant("c", now)
	g2.rejectedGrant("d", now) // trips while c's flag is written
	if g2.flaggedAt("c", now, c.trips) {
		t.Fatal("c's flag recorded after the trip: nobody would revert it")
	}
	off := &grantGuard{threshold: -1}
	if v := off.rejectedGrant("e", now); !v.flag || !off.flaggedAt("e", now, v.trips) {
		t.Fatal("guard off: every flag stands")
	}
}
