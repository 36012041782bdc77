package auth

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/testredis"
	"github.com/lsproxy/lsproxy/store"
)

// TestLeaseHeartbeatWhenLockLost (rule 11): a live holder whose lock was
// lost to a successor (expired during an outage, dropped by a failover)
// rewrites its mark every LockTTL/3, so the successor's grace restarts and
// it never takes over a holder that lives; the holder's grant then lands
// over its own rewritten mark.
func TestLeaseHeartbeatWhenLockLost(t *testing.T) {
	rs := testredis.Start(t)
	keys, _ := store.NewKeyring([]byte(strings.Repeat("h", 32)))
	s := store.NewRedis(rs.Client(), store.RedisOptions{Keys: keys})
	f := newFixture(t)
	f.m = NewManager(s, f.ref, ManagerOptions{Now: f.clk.Now, LockTTL: 900 * time.Millisecond, GuardThreshold: -1})
	rec := &store.Tenant{ID: "acme", Status: store.StatusActive, AccessToken: "at-0", RefreshToken: "rt-0", AccessExpiresAt: f.clk.Now().Add(-time.Second)}
	if _, err := s.Put(ctx, rec, 0); err != nil {
		t.Fatal(err)
	}
	f.ref.gate = make(chan struct{})
	done := make(chan error, 1)
	go func() { _, err := f.m.Token(ctx, "acme"); done <- err }()
	deadline := time.Now().Add(5 * time.Second)
	for f.ref.count() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no token request")
		}
		time.Sleep(5 * time.Millisecond)
	}
	marked, err := s.Get(ctx, "acme")
	if err != nil || !marked.RefreshInFlight {
		t.Fatalf("no mark: %+v %v", marked, err)
	}
	// The lock is lost and a successor holds it.
	rs.Client().Del(context.Background(), "lsproxy:lock:tenant:{acme}", "lsproxy:lock:{tenant:acme}")
	succ, err := s.TryLock(ctx, "tenant:acme", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer succ.Release(ctx)
	var beat *store.Tenant
	for {
		cur, err := s.Get(ctx, "acme")
		if err == nil && cur.WriteID != marked.WriteID {
			beat = cur
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat of the mark while a successor holds the lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !beat.HasMark(marked.RefreshMark) {
		t.Fatalf("heartbeat changed the mark: %+v", beat)
	}
	close(f.ref.gate)
	if err := <-done; err != nil {
		t.Fatalf("holder: %v", err)
	}
	if got, _ := s.Get(ctx, "acme"); got.RefreshToken != "rt-acme-1" || got.RefreshInFlight {
		t.Fatalf("holder's grant not stored over its rewritten mark: %+v", got)
	}
}
