package auth

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/lsproxy/lsproxy/store"
)

// mapStore serves Get from a map and counts reads per tenant; nothing else
// is called on the paths these tests take (fresh tokens, no refresh).
type mapStore struct {
	store.Store
	mu    sync.Mutex
	recs  map[string]*store.Tenant
	reads map[string]int
}

func newMapStore(n, tokLen int, exp time.Time) *mapStore {
	s := &mapStore{recs: make(map[string]*store.Tenant, n), reads: map[string]int{}}
	for i := range n {
		s.add(fmt.Sprintf("t%06d", i), tokLen, exp)
	}
	return s
}

func (s *mapStore) add(id string, tokLen int, exp time.Time) {
	tok := "at-" + id + "-"
	tok += strings.Repeat("x", max(0, tokLen-len(tok)))
	s.recs[id] = &store.Tenant{ID: id, Status: store.StatusActive, AccessToken: tok, RefreshToken: "rt", AccessExpiresAt: exp, Version: 1}
}

func (s *mapStore) Get(_ context.Context, id string) (*store.Tenant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads[id]++
	rec, ok := s.recs[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	cp := *rec
	return &cp, nil
}

func (s *mapStore) readsOf(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads[id]
}

func boundedManager(t *testing.T, s store.Store, maxBytes int64, met *Metrics) *Manager {
	t.Helper()
	return NewManager(s, &fakeRefresher{now: time.Now}, ManagerOptions{CacheMaxBytes: maxBytes, CacheTTL: time.Hour, GuardThreshold: -1, Metrics: met})
}

// checkClock verifies the ring and the byte count against the map.
func checkClock(t *testing.T, m *Manager) {
	t.Helper()
	m.mu.RLock()
	defer m.mu.RUnlock()
	if len(m.clock.ring) != len(m.cache) {
		t.Fatalf("ring has %d tenants, map %d", len(m.clock.ring), len(m.cache))
	}
	var sum int64
	for i, id := range m.clock.ring {
		e := m.cache[id]
		if e == nil || e.slot != i {
			t.Fatalf("ring slot %d names %q, whose entry is %v", i, id, e)
		}
		sum += e.size
	}
	if sum != m.clock.bytes {
		t.Fatalf("entries sum to %d bytes, the count says %d", sum, m.clock.bytes)
	}
}

func TestCacheBoundRespectedUnderManyTenants(t *testing.T) {
	const n, tokLen = 3000, 1200
	s := newMapStore(n, tokLen, time.Now().Add(24*time.Hour))
	one := entrySize("t000000", &cacheEntry{tok: Token{AccessToken: s.recs["t000000"].AccessToken}.withAuthorization()})
	maxBytes := 100 * one
	reg := prometheus.NewRegistry()
	met := NewMetrics(reg)
	m := boundedManager(t, s, maxBytes, met)
	for i := range n {
		id := fmt.Sprintf("t%06d", i)
		tok, err := m.Token(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if tok.AccessToken != s.recs[id].AccessToken {
			t.Fatalf("%s: wrong token", id)
		}
		if st := m.CacheStats(); st.Bytes > maxBytes {
			t.Fatalf("after %d tenants the cache holds %d bytes, bound %d", i+1, st.Bytes, maxBytes)
		}
	}
	checkClock(t, m)
	st := m.CacheStats()
	if st.Entries != 100 || st.Evictions != n-100 {
		t.Errorf("stats %+v, want 100 entries and %d evictions", st, n-100)
	}
	if got := metricValue(t, met.cacheBytes); got != float64(st.Bytes) {
		t.Errorf("lsproxy_token_cache_bytes = %v, want %d", got, st.Bytes)
	}
	if got := metricValue(t, met.cacheEntries); got != 100 {
		t.Errorf("lsproxy_token_cache_entries = %v, want 100", got)
	}
	if got := metricValue(t, met.cacheEvictions); got != n-100 {
		t.Errorf("lsproxy_token_cache_evictions_total = %v, want %d", got, n-100)
	}
	if got := metricValue(t, met.cacheMiss); got != n {
		t.Errorf("misses = %v, want %d", got, n)
	}
}

// A scan of many one-off tenants does not evict the tenants in steady use:
// they are read from the store once, at their first request, and never again.
func TestCacheHotTenantsSurviveColdScan(t *testing.T) {
	const hot, cold, tokLen = 30, 5000, 1200
	s := newMapStore(0, 0, time.Time{})
	exp := time.Now().Add(24 * time.Hour)
	for i := range hot {
		s.add(fmt.Sprintf("hot%03d", i), tokLen, exp)
	}
	for i := range cold {
		s.add(fmt.Sprintf("cold%05d", i), tokLen, exp)
	}
	one := entrySize("hot000", &cacheEntry{tok: Token{AccessToken: s.recs["hot000"].AccessToken}.withAuthorization()})
	reg := prometheus.NewRegistry()
	met := NewMetrics(reg)
	m := boundedManager(t, s, 50*one, met)
	ctx := context.Background()
	hitHot := func() {
		for i := range hot {
			if _, err := m.Token(ctx, fmt.Sprintf("hot%03d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	hitHot()
	for i := range cold {
		if _, err := m.Token(ctx, fmt.Sprintf("cold%05d", i)); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			hitHot()
		}
	}
	for i := range hot {
		if n := s.readsOf(fmt.Sprintf("hot%03d", i)); n != 1 {
			t.Errorf("hot%03d read %d times from the store, want 1 (evicted by the scan)", i, n)
		}
	}
	checkClock(t, m)
	if st := m.CacheStats(); st.Bytes > 50*one || st.Evictions < cold-50 {
		t.Errorf("stats %+v: bound %d, want at least %d evictions", st, 50*one, cold-50)
	}
	hits, misses := metricValue(t, met.cacheHit), metricValue(t, met.cacheMiss)
	if misses != hot+cold || hits != float64(hot*(cold/10)) {
		t.Errorf("hits %v misses %v, want %d and %d", hits, misses, hot*(cold/10), hot+cold)
	}
}

// An evicted tenant is read from the store at its next request and served
// its current token: eviction only forgets.
func TestCacheEvictedTenantReadAgain(t *testing.T) {
	s := newMapStore(3, 100, time.Now().Add(time.Hour))
	one := entrySize("t000000", &cacheEntry{tok: Token{AccessToken: s.recs["t000000"].AccessToken}.withAuthorization()})
	m := boundedManager(t, s, 2*one, nil)
	ctx := context.Background()
	for _, id := range []string{"t000000", "t000001", "t000002"} {
		if _, err := m.Token(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if st := m.CacheStats(); st.Entries != 2 || st.Evictions != 1 {
		t.Fatalf("stats %+v, want 2 entries, 1 eviction", st)
	}
	var evicted string
	for _, id := range []string{"t000000", "t000001"} {
		m.mu.RLock()
		_, ok := m.cache[id]
		m.mu.RUnlock()
		if !ok {
			evicted = id
		}
	}
	if evicted == "" {
		t.Fatal("neither older tenant was evicted")
	}
	s.mu.Lock()
	s.recs[evicted].AccessToken = "at-new"
	s.recs[evicted].Version = 2
	s.mu.Unlock()
	tok, err := m.Token(ctx, evicted)
	if err != nil || tok.AccessToken != "at-new" {
		t.Fatalf("evicted tenant: %q, %v; want the stored token", tok.AccessToken, err)
	}
	if n := s.readsOf(evicted); n != 2 {
		t.Errorf("evicted tenant read %d times, want 2", n)
	}
	checkClock(t, m)
}

// A negative bound is no bound.
func TestCacheUnbounded(t *testing.T) {
	s := newMapStore(500, 1200, time.Now().Add(time.Hour))
	m := boundedManager(t, s, -1, nil)
	for i := range 500 {
		if _, err := m.Token(context.Background(), fmt.Sprintf("t%06d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if st := m.CacheStats(); st.Entries != 500 || st.Evictions != 0 || st.MaxBytes > 0 {
		t.Errorf("stats %+v, want 500 entries, no eviction, no bound", st)
	}
	if d := NewManager(s, nil, ManagerOptions{}).CacheStats().MaxBytes; d != DefaultCacheMaxBytes {
		t.Errorf("default bound %d, want %d", d, DefaultCacheMaxBytes)
	}
}

// The estimate is close to the heap an entry really holds (it bounds RSS).
func TestCacheSizeEstimate(t *testing.T) {
	if testing.Short() {
		t.Skip("heap measurement")
	}
	const n, tokLen = 20000, 1200
	s := newMapStore(n, tokLen, time.Now().Add(time.Hour))
	m := boundedManager(t, s, -1, nil)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("t%06d", i)
	}
	before := heapNow()
	for _, id := range ids {
		if _, err := m.Token(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	after := heapNow()
	runtime.KeepAlive(m)
	real := float64(int64(after)-int64(before)) / n
	est := float64(m.CacheStats().Bytes) / n
	t.Logf("per entry: measured %.0f B, estimated %.0f B", real, est)
	if real > est*1.15 || real < est*0.6 {
		t.Errorf("per entry: measured %.0f B, estimated %.0f B: fix entryOverhead", real, est)
	}
}

func heapNow() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// metricValue reads a gauge's or counter's value.
func metricValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}
