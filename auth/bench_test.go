package auth_test

// Scale benchmarks of the token manager (they run only with -bench):
//
//	go test -run '^$' -bench . -benchmem ./auth
//
// BenchmarkTokenCacheHit is Manager.Token for a cached, valid token, the
// Manager's share of every proxied request.
//
// BenchmarkCacheMemory fills a Manager's cache with 10,000 tenants read from
// a real Redis store and reports the heap it keeps per tenant ("B/tenant"),
// also without the access token's own bytes ("B/tenant-excl-token"), for an
// opaque 40-byte token and a 1,200-byte JWT-like one (K-Series tokens are
// Keycloak JWTs of about that size).
//
// BenchmarkRefreshStorm has 10,000 tenants in use whose access tokens all
// expire within the same minute, on a real Redis and the strict emulator as
// token endpoint. "background" runs one BackgroundRefresher scan with its
// defaults (Concurrency 4, Jitter 15 s); "request-path" has 64 callers ask
// for the expired tokens at once (what happens when nothing refreshed ahead).
// Both report the peak number of token requests in flight at the endpoint,
// the wall time, refreshes per second, refreshes that finished after the old
// token's expiry, and Redis commands per refresh.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
	"github.com/lsproxy/lsproxy/proxy"
	"github.com/lsproxy/lsproxy/store"
)

const benchTenants = 10000

func benchID(i int) string { return fmt.Sprintf("t%06d", i) }

func benchRedisStore(b *testing.B, rs *testredis.Server) (*store.Redis, *redis.Client) {
	b.Helper()
	keys, err := store.NewKeyring([]byte(strings.Repeat("b", 32)))
	if err != nil {
		b.Fatal(err)
	}
	client, err := store.DialRedis(context.Background(), store.RedisConfig{URL: rs.URL()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = client.Close() })
	c, ok := client.(*redis.Client)
	if !ok {
		b.Fatalf("DialRedis returned %T, want *redis.Client", client)
	}
	return store.NewRedis(client, store.RedisOptions{Keys: keys}), c
}

// token returns a distinct token of n bytes for tenant i.
func token(i, n int) string {
	s := fmt.Sprintf("at-%05d-", i)
	return s + strings.Repeat("x", n-len(s))
}

func heapAlloc() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func BenchmarkCacheMemory(b *testing.B) {
	rs := testredis.Start(b)
	s, client := benchRedisStore(b, rs)
	ctx := context.Background()
	for _, tokLen := range []int{40, 1200} {
		if err := client.FlushAll(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		exp := time.Now().Add(24 * time.Hour)
		for i := range benchTenants {
			rec := &store.Tenant{ID: benchID(i), Status: store.StatusActive, AccessToken: token(i, tokLen),
				RefreshToken: "rt-" + benchID(i), AccessExpiresAt: exp}
			if _, err := s.Put(ctx, rec, 0); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("tenants=%d/token=%dB", benchTenants, tokLen), func(b *testing.B) {
			var perTenant float64
			for range b.N {
				m := auth.NewManager(s, nil, auth.ManagerOptions{})
				if _, err := m.Token(ctx, benchID(0)); err != nil { // warm the connection pool
					b.Fatal(err)
				}
				before := heapAlloc()
				for i := range benchTenants {
					tok, err := m.Token(ctx, benchID(i))
					if err != nil {
						b.Fatal(err)
					}
					if len(tok.AccessToken) != tokLen {
						b.Fatalf("token of %d bytes, want %d", len(tok.AccessToken), tokLen)
					}
				}
				after := heapAlloc()
				runtime.KeepAlive(m)
				perTenant = float64(int64(after)-int64(before)) / benchTenants
			}
			b.ReportMetric(perTenant, "B/tenant")
			b.ReportMetric(perTenant-float64(tokLen), "B/tenant-excl-token")
		})
	}
}

// BenchmarkTokenCacheHit is the Manager's part of every proxied request: a
// cached, valid token for one of 10,000 tenants (0 allocations, no store).
func BenchmarkTokenCacheHit(b *testing.B) {
	rs := testredis.Start(b)
	s, client := benchRedisStore(b, rs)
	ctx := context.Background()
	exp := time.Now().Add(24 * time.Hour)
	for i := range benchTenants {
		rec := &store.Tenant{ID: benchID(i), Status: store.StatusActive, AccessToken: token(i, 40), RefreshToken: "rt", AccessExpiresAt: exp}
		if _, err := s.Put(ctx, rec, 0); err != nil {
			b.Fatal(err)
		}
	}
	m := auth.NewManager(s, nil, auth.ManagerOptions{})
	ids := make([]string, benchTenants)
	for i := range ids {
		ids[i] = benchID(i)
		if _, err := m.Token(ctx, ids[i]); err != nil {
			b.Fatal(err)
		}
	}
	calls0 := redisCalls(b, client)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := m.Token(ctx, ids[i%benchTenants]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(redisCalls(b, client)-calls0)/float64(i), "redis-cmds/op")
}

// tokenGauge counts requests in flight at the token endpoint.
type tokenGauge struct {
	path                   string
	next                   http.Handler
	inflight, peak, served atomic.Int64
}

func (g *tokenGauge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == g.path {
		n := g.inflight.Add(1)
		defer g.inflight.Add(-1)
		for {
			p := g.peak.Load()
			if n <= p || g.peak.CompareAndSwap(p, n) {
				break
			}
		}
		g.served.Add(1)
	}
	g.next.ServeHTTP(w, r)
}

func redisCalls(b *testing.B, c *redis.Client) int64 {
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") || name == "cmdstat_info" {
			continue
		}
		var calls int64
		if _, err := fmt.Sscanf(rest, "calls=%d", &calls); err == nil {
			total += calls
		}
	}
	return total
}

func BenchmarkRefreshStorm(b *testing.B) {
	b.Run("background", func(b *testing.B) { refreshStorm(b, false) })
	b.Run("request-path", func(b *testing.B) { refreshStorm(b, true) })
}

// stormTenants is BenchmarkRefreshStorm's tenant count: BENCH_STORM_TENANTS
// or benchTenants (docs/benchmarks.md's scale table used 100,000).
func stormTenants() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_STORM_TENANTS")); err == nil && n > 0 {
		return n
	}
	return benchTenants
}

func refreshStorm(b *testing.B, requestPath bool) {
	ctx := context.Background()
	benchTenants := stormTenants()
	emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeries, AccessTTL: time.Hour})
	gauge := &tokenGauge{path: emu.Paths().Token, next: emu}
	srv := httptest.NewServer(gauge)
	defer srv.Close()
	rs := testredis.Start(b)
	s, client := benchRedisStore(b, rs)
	cfg := emu.Config()
	// As serve wires it.
	oc := &auth.OAuthClient{
		ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, TokenURL: srv.URL + emu.Paths().Token,
		AuthStyle: oauth2.AuthStyleInHeader, Timeout: 10 * time.Second,
		HTTPClient: &http.Client{Transport: proxy.NewTransport(proxy.TransportOptions{ResponseHeaderTimeout: 10 * time.Second, MaxIdleConnsPerHost: 16})},
	}

	for range b.N {
		b.StopTimer()
		if err := client.FlushAll(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		m := auth.NewManager(s, oc, auth.ManagerOptions{})
		// Tenants in use with valid tokens (cached, so counted as in use) …
		far := time.Now().Add(time.Hour)
		for i := range benchTenants {
			g := emu.IssueGrant(benchID(i))
			rec := &store.Tenant{ID: benchID(i), Status: store.StatusActive, AccessToken: g.AccessToken,
				RefreshToken: g.RefreshToken, AccessExpiresAt: far, CreatedAt: time.Now()}
			if _, err := s.Put(ctx, rec, 0); err != nil {
				b.Fatal(err)
			}
			if _, err := m.Token(ctx, benchID(i)); err != nil {
				b.Fatal(err)
			}
		}
		// … whose tokens now all expire within the same minute (issued
		// together an hour ago). Request-path: already inside RefreshBefore.
		stormStart := time.Now().Add(15 * time.Second)
		if requestPath {
			stormStart = time.Now().Add(-30 * time.Second)
		}
		oldExpiry := make([]time.Time, benchTenants)
		for i := range benchTenants {
			rec, err := s.Get(ctx, benchID(i))
			if err != nil {
				b.Fatal(err)
			}
			rec.AccessExpiresAt = stormStart.Add(time.Duration(i) * time.Minute / time.Duration(benchTenants))
			oldExpiry[i] = rec.AccessExpiresAt
			if _, err := s.Put(ctx, rec, rec.Version); err != nil {
				b.Fatal(err)
			}
			m.Invalidate(benchID(i)) // as the change notification would
		}
		st0 := emu.Stats()
		served0 := gauge.served.Load()
		gauge.peak.Store(0)
		calls0 := redisCalls(b, client)
		b.StartTimer()

		start := time.Now()
		if requestPath {
			var next atomic.Int64
			var wg sync.WaitGroup
			for range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := int(next.Add(1) - 1)
						if i >= benchTenants {
							return
						}
						if _, err := m.Token(ctx, benchID(i)); err != nil {
							b.Errorf("token %s: %v", benchID(i), err)
							return
						}
					}
				}()
			}
			wg.Wait()
		} else {
			bg := &auth.BackgroundRefresher{Manager: m, Store: s} // defaults: Interval 30s, Concurrency 4, Jitter 15s
			if n := bg.Scan(ctx); n != benchTenants {
				b.Fatalf("scan started %d refreshes, want %d", n, benchTenants)
			}
		}
		elapsed := time.Since(start)

		b.StopTimer()
		calls := redisCalls(b, client) - calls0
		st := emu.Stats()
		refreshes := st.RefreshGrants - st0.RefreshGrants
		if refreshes != int64(benchTenants) || st.ReuseDetected != st0.ReuseDetected || st.RefreshRejected != st0.RefreshRejected {
			b.Fatalf("refreshes=%d (want %d) reuse=%d rejected=%d", refreshes, benchTenants,
				st.ReuseDetected-st0.ReuseDetected, st.RefreshRejected-st0.RefreshRejected)
		}
		late := 0
		for i := range benchTenants {
			rec, err := s.Get(ctx, benchID(i))
			if err != nil {
				b.Fatal(err)
			}
			if rec.LastRefreshAt.After(oldExpiry[i]) {
				late++
			}
		}
		b.ReportMetric(float64(gauge.peak.Load()), "peak-token-reqs-in-flight")
		b.ReportMetric(float64(gauge.served.Load()-served0), "token-reqs")
		b.ReportMetric(elapsed.Seconds(), "s-wall")
		b.ReportMetric(float64(refreshes)/elapsed.Seconds(), "refreshes/s")
		b.ReportMetric(float64(late), "refreshed-after-expiry")
		b.ReportMetric(float64(calls)/float64(refreshes), "redis-cmds/refresh")
		b.StartTimer()
	}
}
