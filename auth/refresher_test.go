package auth

import (
	"context"
	"fmt"
	"github.com/lsproxy/lsproxy/internal/testclock"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/store"
)

func TestRefresherDue(t *testing.T) {
	f := newFixture(t)
	b := &BackgroundRefresher{Manager: f.m, Store: f.store, Interval: 30 * time.Second, IdleTTL: 14 * 24 * time.Hour, IdleMargin: 48 * time.Hour}
	b.defaults()
	now := f.clk.Now()
	day := 24 * time.Hour
	cases := []struct {
		name  string
		rec   store.Tenant
		inUse bool
		want  string
	}{
		{"idle, recently refreshed", store.Tenant{LastRefreshAt: now.Add(-day), AccessExpiresAt: now.Add(-day)}, false, ""},
		{"idle, near default idle expiry", store.Tenant{LastRefreshAt: now.Add(-13 * day)}, false, "refresh token idle expiry"},
		{"idle, authorized long ago, never refreshed", store.Tenant{AuthorizedAt: now.Add(-13 * day)}, false, "refresh token idle expiry"},
		{"provider-reported refresh expiry close", store.Tenant{RefreshExpiresAt: now.Add(day), LastRefreshAt: now}, false, "refresh token idle expiry"},
		{"provider-reported refresh expiry far", store.Tenant{RefreshExpiresAt: now.Add(20 * day), LastRefreshAt: now.Add(-13 * day)}, false, ""},
		{"in use, access expiring", store.Tenant{LastRefreshAt: now, AccessExpiresAt: now.Add(40 * time.Second)}, true, "access token expiring"},
		{"not in use, access expiring", store.Tenant{LastRefreshAt: now, AccessExpiresAt: now.Add(40 * time.Second)}, false, ""},
		{"in use, access far", store.Tenant{LastRefreshAt: now, AccessExpiresAt: now.Add(time.Hour)}, true, ""},
		{"flagged", store.Tenant{Status: store.StatusReauthorizationRequired, LastRefreshAt: now.Add(-13 * day)}, false, ""},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := c.rec
			rec.ID = fmt.Sprintf("t%d", i)
			rec.RefreshToken = "rt"
			if rec.Status == "" {
				rec.Status = store.StatusActive
			}
			if c.inUse {
				f.m.mu.Lock()
				e := &cacheEntry{}
				e.usedAt.Store(now.UnixNano())
				f.m.put(rec.ID, e)
				f.m.mu.Unlock()
			}
			if got := b.due(&rec); got != c.want {
				t.Fatalf("due = %q, want %q", got, c.want)
			}
		})
	}
}

func TestRefresherBoundsConcurrencyAndRefreshesOnceAcrossReplicas(t *testing.T) {
	f := newFixture(t)
	for i := 0; i < 12; i++ {
		rec := f.put(t, fmt.Sprintf("t%02d", i), time.Hour)
		old := rec.Clone()
		old.LastRefreshAt = f.clk.Now().Add(-13 * 24 * time.Hour)
		old.CreatedAt = old.LastRefreshAt
		if _, err := f.store.Put(ctx, old, rec.Version); err != nil {
			t.Fatal(err)
		}
	}
	var inflight, peak atomic.Int32
	f.ref.next = func(t0 *store.Tenant) (*Grant, error) {
		n := inflight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond) // hold the slot so overlap is observable
		inflight.Add(-1)
		return &Grant{AccessToken: "at-" + t0.ID + "-new", RefreshToken: "rt-" + t0.ID + "-new", Expiry: f.clk.Now().Add(time.Hour)}, nil
	}
	// A second "replica": another manager on the same store.
	m2 := NewManager(f.store, f.ref, ManagerOptions{Now: f.clk.Now, LockTTL: 2 * time.Second})
	mk := func(m *Manager) *BackgroundRefresher {
		return &BackgroundRefresher{Manager: m, Store: f.store, Concurrency: 3, IdleTTL: 14 * 24 * time.Hour, Jitter: time.Millisecond}
	}
	var wg sync.WaitGroup
	for _, b := range []*BackgroundRefresher{mk(f.m), mk(m2)} {
		wg.Add(1)
		go func(b *BackgroundRefresher) { defer wg.Done(); b.Scan(ctx) }(b)
	}
	wg.Wait()
	if f.ref.count() != 12 {
		t.Fatalf("refreshes = %d, want 12 (one per tenant across both replicas)", f.ref.count())
	}
	if p := peak.Load(); p > 6 {
		t.Fatalf("peak concurrency %d > 2 replicas x 3", p)
	}
	// All refreshed: a new scan finds nothing due.
	if n := mk(f.m).Scan(ctx); n != 0 {
		t.Fatalf("second scan started %d refreshes", n)
	}
}

// TestIdleTenantSurvivesIdleExpiry: the emulator expires refresh tokens unused
// for 14 days (K-Series V1); the refresher keeps a tenant with no traffic
// alive for 60 days, and without it the tenant would die.
func TestIdleTenantSurvivesIdleExpiry(t *testing.T) {
	clk := testclock.New(time.Now())
	emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeriesV1, RefreshIdleTTL: 14 * 24 * time.Hour, Now: clk.Now})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	s, err := store.OpenBolt(t.TempDir(), testKeys(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cfg := emu.Config()
	client := &OAuthClient{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: srv.URL + emu.Paths().Token,
		AuthStyle: oauth2.AuthStyleInHeader, Now: clk.Now}
	m := NewManager(s, client, ManagerOptions{Now: clk.Now})
	for _, id := range []string{"kept", "control"} {
		g := emu.IssueGrant(id)
		if _, err := s.Put(ctx, &store.Tenant{ID: id, Status: store.StatusActive, AccessToken: g.AccessToken, RefreshToken: g.RefreshToken,
			AccessExpiresAt: clk.Now().Add(time.Hour), AuthorizedAt: clk.Now(), CreatedAt: clk.Now()}, 0); err != nil {
			t.Fatal(err)
		}
	}
	b := &BackgroundRefresher{Manager: m, Store: s, IdleTTL: 14 * 24 * time.Hour, IdleMargin: 48 * time.Hour, Jitter: time.Millisecond}
	// Only "kept" is watched by the refresher: "control" is deleted from
	// its view by scanning a filtered store.
	only := &filteredStore{Store: s, id: "kept"}
	b.Store = only
	for day := 0; day < 60; day++ {
		clk.Advance(24 * time.Hour)
		b.Scan(ctx)
	}
	if n := emu.RefreshCount("kept"); n < 4 {
		t.Fatalf("kept was refreshed %d times in 60 days", n)
	}
	if _, err := m.Token(ctx, "kept"); err != nil {
		t.Fatalf("kept after 60 idle days: %v", err)
	}
	if _, err := m.Token(ctx, "control"); err == nil {
		t.Fatal("control tenant survived 60 idle days without the refresher: the emulator does not expire idle refresh tokens")
	}
}

// filteredStore lists one tenant only.
type filteredStore struct {
	store.Store
	id string
}

func (f *filteredStore) List(context.Context) ([]string, error) { return []string{f.id}, nil }

// countingStore counts List and Get calls.
type countingStore struct {
	store.Store
	lists, gets atomic.Int32
}

func (c *countingStore) List(ctx context.Context) ([]string, error) {
	c.lists.Add(1)
	return c.Store.List(ctx)
}

func (c *countingStore) Get(ctx context.Context, id string) (*store.Tenant, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, id)
}

// TestScanInUseReadsOnlyDueTenants: the frequent check works from the
// cache: it lists nothing and reads only the tenant that is due.
func TestScanInUseReadsOnlyDueTenants(t *testing.T) {
	f := newFixture(t)
	for i := 0; i < 20; i++ {
		f.put(t, fmt.Sprintf("idle-%02d", i), time.Hour)
	}
	f.put(t, "busy", time.Hour)
	f.put(t, "expiring", 40*time.Second)
	for _, id := range []string{"busy", "expiring"} {
		if _, err := f.m.Token(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	cs := &countingStore{Store: f.store}
	b := &BackgroundRefresher{Manager: f.m, Store: cs, Interval: 30 * time.Second, Jitter: time.Millisecond}
	if n := b.ScanInUse(ctx); n != 1 {
		t.Fatalf("refreshes started = %d, want 1", n)
	}
	if cs.lists.Load() != 0 || cs.gets.Load() != 1 {
		t.Fatalf("lists=%d gets=%d, want 0 and 1", cs.lists.Load(), cs.gets.Load())
	}
	if f.ref.count() != 1 || f.get(t, "expiring").RefreshCount != 1 {
		t.Fatalf("the expiring tenant was not refreshed")
	}
}

// countingBolt is a Bolt (so a store.Lister) that counts List and Get.
type countingBolt struct {
	*store.Bolt
	lists, gets atomic.Int32
}

func (c *countingBolt) List(ctx context.Context) ([]string, error) {
	c.lists.Add(1)
	return c.Bolt.List(ctx)
}

func (c *countingBolt) Get(ctx context.Context, id string) (*store.Tenant, error) {
	c.gets.Add(1)
	return c.Bolt.Get(ctx, id)
}

// TestScanDueReadsOnlyDueTenants: with a due index the idle-expiry scan
// reads the due tenants and the in-use expiring one, not every tenant.
func TestScanDueReadsOnlyDueTenants(t *testing.T) {
	f := newFixture(t)
	day := 24 * time.Hour
	for i := 0; i < 30; i++ {
		f.put(t, fmt.Sprintf("idle-%02d", i), time.Hour) // created now: idle expiry 14 days away
	}
	for _, id := range []string{"old-1", "old-2"} {
		rec := &store.Tenant{ID: id, Status: store.StatusActive, AccessToken: "at-" + id + "-0", RefreshToken: "rt-" + id + "-0",
			AccessExpiresAt: f.clk.Now().Add(time.Hour), CreatedAt: f.clk.Now().Add(-13 * day)}
		if _, err := f.store.Put(ctx, rec, 0); err != nil {
			t.Fatal(err)
		}
	}
	f.put(t, "expiring", 40*time.Second)
	if _, err := f.m.Token(ctx, "expiring"); err != nil {
		t.Fatal(err)
	}
	cs := &countingBolt{Bolt: f.store}
	b := &BackgroundRefresher{Manager: f.m, Store: cs, Interval: 30 * time.Second, IdleTTL: 14 * day, IdleMargin: 48 * time.Hour, Jitter: time.Millisecond}
	if n := b.ScanDue(ctx); n != 3 {
		t.Fatalf("refreshes started = %d, want 3", n)
	}
	if cs.lists.Load() != 0 || cs.gets.Load() != 3 {
		t.Fatalf("lists=%d gets=%d, want 0 and 3", cs.lists.Load(), cs.gets.Load())
	}
	for _, id := range []string{"old-1", "old-2", "expiring"} {
		if f.get(t, id).RefreshCount != 1 {
			t.Errorf("%s not refreshed", id)
		}
	}
	// Refreshed, they leave the due index.
	cs.gets.Store(0)
	if n := b.ScanDue(ctx); n != 0 || cs.gets.Load() != 0 {
		t.Fatalf("second scan: %d refreshes, %d reads; want 0 and 0", n, cs.gets.Load())
	}
}

// TestRefresherReadAllOncePerFleet: the read of every tenant (the safety
// net for lost due-index updates) is claimed for the fleet for
// ReadAllEvery, so a second replica, or a replica that restarts, does not
// read every record again (at 1M tenants, minutes of store reads on every
// start).
func TestRefresherReadAllOncePerFleet(t *testing.T) {
	f := newFixture(t)
	a := &BackgroundRefresher{Manager: f.m, Store: f.store}
	b := &BackgroundRefresher{Manager: f.m, Store: f.store}
	a.defaults()
	b.defaults()
	if !a.readAllClaimed(ctx) {
		t.Fatal("the first replica may not read every tenant")
	}
	if b.readAllClaimed(ctx) || a.readAllClaimed(ctx) {
		t.Fatal("read every tenant again within ReadAllEvery")
	}
}
