package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
	"github.com/lsproxy/lsproxy/store"
)

// TestReplicasUnderLoad is the acceptance test: three replicas on one Redis,
// 20 tenants with 3-second access tokens, 48 concurrent clients for 20 s.
// Single-use refresh tokens must never be presented twice (the emulator
// revokes the grant on reuse), no request may fail and no response may
// carry another tenant's data.
func TestReplicasUnderLoad(t *testing.T) {
	const (
		replicas = 3
		tenants  = 20
		clients  = 48
		duration = 20 * time.Second
		path     = "/f/data/businesses"
	)
	emu := startEmulator(t, emulator.Config{AccessTTL: 3 * time.Second})
	rdb := testredis.Start(t)
	env := with(baseEnv(emu), "LSPROXY_REDIS_URL", rdb.URL(), "LSPROXY_REFRESH_BEFORE", "1s")

	procs := make([]*proc, replicas)
	for i := range procs {
		procs[i] = startProxy(t, env)
	}
	ids := make([]string, tenants)
	for i := range ids {
		ids[i] = fmt.Sprintf("tenant-%02d", i)
		procs[i%replicas].importTenant(t, ids[i], emu.IssueGrant(ids[i]))
	}

	var (
		requests, non2xx, wrongTenant, transportErrs atomic.Int64
		mu                                           sync.Mutex
		failures                                     []string // the first few, for the report
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	before := emu.Stats()
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := procs[c%replicas]
			for i := c; ctx.Err() == nil; i++ {
				tenant := ids[(i*7+c)%tenants]
				r, err := p.get(ctx, tenant, path)
				if ctx.Err() != nil {
					return // the run ended during this request
				}
				requests.Add(1)
				switch {
				case err != nil:
					transportErrs.Add(1)
					fail("client %d, %s: %v", c, tenant, err)
				case r.Status/100 != 2:
					non2xx.Add(1)
					fail("client %d, %s via %s: %d %s %s", c, tenant, p.ProxyURL, r.Status, r.Header.Get("X-Lsproxy-Error"), r.Body)
				case r.str("tenant") != tenant:
					wrongTenant.Add(1)
					fail("client %d asked for %s, got the data of %q", c, tenant, r.str("tenant"))
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	st := emu.Stats()

	refreshes := st.RefreshGrants - before.RefreshGrants
	t.Logf("replicas=%d tenants=%d clients=%d duration=%v", replicas, tenants, clients, elapsed.Round(time.Millisecond))
	t.Logf("requests=%d (%.0f req/s) non2xx=%d transport_errors=%d wrong_tenant=%d",
		requests.Load(), float64(requests.Load())/elapsed.Seconds(), non2xx.Load(), transportErrs.Load(), wrongTenant.Load())
	t.Logf("emulator: refreshes=%d token_requests=%d refresh_rejected=%d reuse_detected=%d grants_revoked=%d api_unauthorized=%d",
		refreshes, st.TokenRequests-before.TokenRequests, st.RefreshRejected, st.ReuseDetected, st.GrantsRevoked, st.APIUnauthorized)
	for _, f := range failures {
		t.Error(f)
	}
	if st.ReuseDetected != 0 {
		t.Errorf("emulator detected %d refresh token reuses", st.ReuseDetected)
	}
	if st.RefreshRejected != 0 {
		t.Errorf("emulator rejected %d refreshes", st.RefreshRejected)
	}
	if n := non2xx.Load() + transportErrs.Load() + wrongTenant.Load(); n != 0 {
		t.Errorf("%d failed requests", n)
	}
	if refreshes < tenants {
		t.Errorf("only %d refreshes in %v with 3 s tokens", refreshes, elapsed)
	}
	if requests.Load() < int64(clients) {
		t.Errorf("only %d requests", requests.Load())
	}
	for i, id := range ids {
		v := procs[i%replicas].getTenant(t, id)
		if v.Status != store.StatusActive {
			t.Errorf("tenant %s: status %s (%s)", id, v.Status, v.Reason)
		}
		if emu.ActiveGrants(id) != 1 {
			t.Errorf("tenant %s: %d active grants at the emulator", id, emu.ActiveGrants(id))
		}
	}
	for i, p := range procs {
		if code := p.Term(30 * time.Second); code != 0 {
			t.Errorf("replica %d exited %d", i, code)
		}
	}
}
