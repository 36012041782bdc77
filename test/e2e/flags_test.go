package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
	"github.com/lsproxy/lsproxy/store"
)

// TestRevokedGrantFlags: a grant revoked at the provider ends in 401
// reauthorization_required with a reason, visible in the admin API; other
// tenants are unaffected and a flagged tenant no longer hits the token
// endpoint.
func TestRevokedGrantFlags(t *testing.T) {
	emu := startEmulator(t, emulator.Config{})
	p := startProxy(t, with(baseEnv(emu), "LSPROXY_DATA_DIR", t.TempDir()))
	for _, id := range []string{"gone", "fine"} {
		p.importTenant(t, id, emu.IssueGrant(id))
		p.expectServes(t, id)
	}

	emu.Revoke("gone")
	var last result
	for i := 0; i < 3; i++ { // the first request after the revocation should already tell
		last = p.mustGet(t, "gone", "/f/data/businesses")
		if last.Header.Get("X-Lsproxy-Error") == "reauthorization_required" {
			if i > 0 {
				t.Logf("flagged after %d requests", i+1)
			}
			break
		}
		t.Logf("request %d after the revocation: %d %s", i+1, last.Status, last.Body)
	}
	if last.Status != http.StatusUnauthorized || last.Header.Get("X-Lsproxy-Error") != "reauthorization_required" {
		t.Fatalf("after the revocation: %d %q %s", last.Status, last.Header.Get("X-Lsproxy-Error"), last.Body)
	}
	if last.str("error") != "reauthorization_required" || last.str("reason") == "" || last.str("tenant") != "gone" {
		t.Errorf("error body %s: want error reauthorization_required, a reason and tenant gone", last.Body)
	}
	v := p.getTenant(t, "gone")
	if v.Status != store.StatusReauthorizationRequired || v.Reason == "" {
		t.Errorf("admin view: status %q reason %q", v.Status, v.Reason)
	}
	t.Logf("reason: %q", v.Reason)

	// Flagged: answered without asking the provider again.
	tokenRequests := emu.Stats().TokenRequests
	for i := 0; i < 5; i++ {
		r := p.mustGet(t, "gone", "/f/data/businesses")
		if r.Status != http.StatusUnauthorized || r.Header.Get("X-Lsproxy-Error") != "reauthorization_required" {
			t.Fatalf("flagged tenant, request %d: %d %s", i, r.Status, r.Body)
		}
	}
	if n := emu.Stats().TokenRequests - tokenRequests; n != 0 {
		t.Errorf("a flagged tenant caused %d token requests", n)
	}

	p.expectServes(t, "fine")
	if v := p.getTenant(t, "fine"); v.Status != store.StatusActive {
		t.Errorf("fine: status %s", v.Status)
	}
	if st := emu.Stats(); st.ReuseDetected != 0 {
		t.Errorf("reuse detected: %d", st.ReuseDetected)
	}
}

// TestForbiddenPassesThrough: K-Series answers 403 for location and scope
// errors; lsproxy passes it through and never flags or refreshes for it.
func TestForbiddenPassesThrough(t *testing.T) {
	emu := startEmulator(t, emulator.Config{})
	p := startProxy(t, with(baseEnv(emu), "LSPROXY_DATA_DIR", t.TempDir()))
	p.importTenant(t, "acme", emu.IssueGrant("acme"))

	// What the emulator answers directly, for comparison.
	g := emu.IssueGrant("direct")
	direct, err := do(context.Background(), http.MethodGet, emu.URL+"/f/wrong-location/1/items",
		http.Header{"Authorization": {"Bearer " + g.AccessToken}}, nil)
	if err != nil || direct.Status != http.StatusForbidden {
		t.Fatalf("emulator directly: %v %d", err, direct.Status)
	}

	for i := 0; i < 3; i++ {
		r := p.mustGet(t, "acme", "/f/wrong-location/1/items")
		if r.Status != http.StatusForbidden {
			t.Fatalf("status %d, want 403: %s", r.Status, r.Body)
		}
		if e := r.Header.Get("X-Lsproxy-Error"); e != "" {
			t.Errorf("X-Lsproxy-Error %q on an upstream 403", e)
		}
		if !bytes.Equal(r.Body, direct.Body) {
			t.Errorf("body %s, the emulator answers %s", r.Body, direct.Body)
		}
		if ct := r.Header.Get("Content-Type"); ct != direct.Header.Get("Content-Type") {
			t.Errorf("Content-Type %q, the emulator answers %q", ct, direct.Header.Get("Content-Type"))
		}
	}
	if v := p.getTenant(t, "acme"); v.Status != store.StatusActive || v.Reason != "" {
		t.Errorf("after 403s: status %q reason %q", v.Status, v.Reason)
	}
	if n := emu.RefreshCount("acme"); n != 0 {
		t.Errorf("a 403 caused %d refreshes", n)
	}
	p.expectServes(t, "acme")
}

// TestTokenEndpointOutage: the token endpoint answers 503 for 8 s while
// traffic flows with 2-second tokens. No tenant is flagged, every response
// is 200 or 503 token_unavailable with Retry-After, and service resumes
// within seconds of the recovery.
func TestTokenEndpointOutage(t *testing.T) {
	const (
		tenants = 6
		clients = 8
		outage  = 8 * time.Second
	)
	emu := startEmulator(t, emulator.Config{AccessTTL: 2 * time.Second})
	rdb := testredis.Start(t)
	env := with(baseEnv(emu), "LSPROXY_REDIS_URL", rdb.URL(),
		"LSPROXY_REFRESH_BEFORE", "1s", "LSPROXY_BREAKER_OPEN_FOR", "1s")
	procs := []*proc{startProxy(t, env), startProxy(t, env)}
	ids := make([]string, tenants)
	for i := range ids {
		ids[i] = fmt.Sprintf("shop-%d", i)
		procs[0].importTenant(t, ids[i], emu.IssueGrant(ids[i]))
	}

	var (
		ok, unavailable, other atomic.Int64
		mu                     sync.Mutex
		lastOK                 = map[string]time.Time{}
		others                 []string
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := procs[c%len(procs)]
			for i := c; ctx.Err() == nil; i++ {
				tenant := ids[i%tenants]
				r, err := p.get(ctx, tenant, "/f/data/businesses")
				if ctx.Err() != nil {
					return
				}
				switch {
				case err == nil && r.Status == http.StatusOK && r.str("tenant") == tenant:
					ok.Add(1)
					mu.Lock()
					lastOK[tenant] = time.Now()
					mu.Unlock()
				case err == nil && r.Status == http.StatusServiceUnavailable &&
					r.Header.Get("X-Lsproxy-Error") == "token_unavailable" && r.Header.Get("Retry-After") != "":
					unavailable.Add(1)
				default:
					other.Add(1)
					mu.Lock()
					if len(others) < 10 {
						if err != nil {
							others = append(others, err.Error())
						} else {
							others = append(others, fmt.Sprintf("%s: %d %q Retry-After=%q %s", tenant, r.Status,
								r.Header.Get("X-Lsproxy-Error"), r.Header.Get("Retry-After"), r.Body))
						}
					}
					mu.Unlock()
				}
				// Pace the clients: the point is the token lifecycle, not throughput.
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
	}

	// Let tokens rotate once under traffic, then take the token endpoint down.
	if !eventually(10*time.Second, func() bool { return emu.Stats().RefreshGrants >= tenants }) {
		t.Fatalf("no refreshes before the outage: %+v", emu.Stats())
	}
	emu.SetTokenOutage(http.StatusServiceUnavailable)
	outageStart := time.Now()
	time.Sleep(outage) // the outage's length is the scenario, not a synchronisation
	okDuring, unavailDuring := ok.Load(), unavailable.Load()
	emu.SetTokenOutage(0)
	recovered := time.Now()

	// Every tenant must serve 200 again within a bounded time.
	allBack := eventually(15*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if !lastOK[id].After(recovered) {
				return false
			}
		}
		return true
	})
	recoveryTime := time.Since(recovered)
	cancel()
	wg.Wait()

	st := emu.Stats()
	t.Logf("outage %v: token_outages=%d ok=%d token_unavailable=%d other=%d; all tenants back after %v",
		recovered.Sub(outageStart).Round(time.Millisecond), st.TokenOutages,
		ok.Load(), unavailable.Load(), other.Load(), recoveryTime.Round(time.Millisecond))
	t.Logf("until the outage ended: ok=%d token_unavailable=%d; emulator refreshes=%d reuse=%d rejected=%d",
		okDuring, unavailDuring, st.RefreshGrants, st.ReuseDetected, st.RefreshRejected)
	if !allBack {
		t.Errorf("not every tenant served 200 within 15 s of the recovery")
	}
	for _, o := range others {
		t.Errorf("unexpected response: %s", o)
	}
	if unavailDuring == 0 {
		t.Errorf("no 503 token_unavailable during an %v outage with 2 s tokens", outage)
	}
	if st.TokenOutages == 0 {
		t.Errorf("the token endpoint was never asked during the outage")
	}
	if st.ReuseDetected != 0 || st.RefreshRejected != 0 {
		t.Errorf("reuse detected %d, refreshes rejected %d", st.ReuseDetected, st.RefreshRejected)
	}
	for _, id := range ids {
		if v := procs[1].getTenant(t, id); v.Status != store.StatusActive {
			t.Errorf("tenant %s flagged by an outage: %s (%s)", id, v.Status, v.Reason)
		}
	}
}
