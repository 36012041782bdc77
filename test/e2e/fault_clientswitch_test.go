package e2e

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
)

// TestFaultClientIDSwitch: a deployment restarts with the wrong client id
// (another app registered with the same provider, so client
// authentication passes) while 20 tenants need a refresh. Lightspeed
// answers invalid_grant ("issued to another client") for every one of them,
// though every grant is alive. Past the mass-invalid_grant threshold lsproxy
// blames its own configuration (SPEC §3 rule 15): no tenant stays flagged
// (each replica flags at most threshold-1 = 2 before its guard trips, and
// reverts those when it does; their requests may answer 401 meanwhile),
// requests answer 503 token_unavailable, the stored refresh tokens are
// kept. After the configuration is fixed (replicas restarted with the
// right client), all 20 recover without re-authorization.
func TestFaultClientIDSwitch(t *testing.T) {
	const (
		wrongID, wrongSecret = "second-app", "second-app-secret"
		recoveryBound        = 15 * time.Second
		replicas             = 2
		// guardThreshold is auth.DefaultGuardThreshold: distinct tenants
		// rejected before a replica's guard trips.
		guardThreshold = 3
	)
	rdb := testredis.Start(t)
	d := newDeployment(t, "client-id-switch-20", emulator.Config{
		AccessTTL:    10 * time.Minute,
		OtherClients: map[string]string{wrongID: wrongSecret},
	}, 1, "LSPROXY_REDIS_URL", rdb.URL())
	ids := tenantIDs("switched", 20)
	d.importTenants(d.procs[0], 1, ids...) // expired: every tenant's next request refreshes
	if code := d.procs[0].Term(30 * time.Second); code != 0 {
		t.Fatalf("importer exited %d", code)
	}
	wrongEnv := with(d.env, "LSPROXY_CLIENT_ID", wrongID, "LSPROXY_CLIENT_SECRET", wrongSecret)
	var (
		mu         sync.Mutex
		live       []*proc
		fixAt      time.Time
		briefFlags = map[string]bool{} // tenants answered 401 before their replica's guard tripped
	)
	setLive := func(ps []*proc) {
		mu.Lock()
		live = ps
		mu.Unlock()
	}
	d.procs = nil // the importer has exited
	for range replicas {
		d.procs = append(d.procs, startProxy(t, wrongEnv))
	}
	setLive(d.procs)
	wrong := append([]*proc(nil), d.procs...)

	load := startLoad(8, func(int, int) (*proc, string, bool) {
		mu.Lock()
		defer mu.Unlock()
		if len(live) == 0 {
			return nil, "", false // between the restarts
		}
		return live[rand.IntN(len(live))], ids[rand.IntN(len(ids))], true
	}, policy{
		may503: func(_ string, at time.Time) bool {
			mu.Lock()
			defer mu.Unlock()
			return fixAt.IsZero() || at.Before(fixAt.Add(recoveryBound))
		},
		retired: func(p *proc) bool {
			mu.Lock()
			defer mu.Unlock()
			return !slices.Contains(live, p)
		},
		may401: func(tenant string, r result, _ time.Time) bool {
			mu.Lock()
			defer mu.Unlock()
			if !fixAt.IsZero() || r.Header.Get("X-Lsproxy-Error") != "reauthorization_required" {
				return false
			}
			briefFlags[tenant] = true
			return true
		},
	})
	// As many refusals as tenants, then 3 s more of load (hundreds of
	// requests over 20 tenants: every tenant is refused at least once).
	if !eventually(20*time.Second, func() bool {
		return d.emu.Stats().RefreshRejected-d.before.RefreshRejected >= int64(len(ids))
	}) {
		t.Errorf("only %d refreshes refused in 20 s", d.emu.Stats().RefreshRejected-d.before.RefreshRejected)
	}
	time.Sleep(3 * time.Second) // the load runs against the misconfigured replicas
	flaggedWhileWrong := 0
	for _, id := range ids {
		if v := wrong[0].getTenant(t, id); v.Status != "active" {
			flaggedWhileWrong++
			t.Errorf("tenant %s still flagged during the misconfiguration (the guard should have reverted it): %s (%s)", id, v.Status, v.Reason)
		}
	}
	mu.Lock()
	brief := len(briefFlags)
	mu.Unlock()
	if limit := replicas * (guardThreshold - 1); brief > limit {
		t.Errorf("%d tenants answered 401 before the guard tripped, want at most %d (threshold-1 per replica)", brief, limit)
	}

	// Fix the configuration: the replicas restart with the right client.
	setLive(nil)
	for i, p := range wrong {
		if code := p.Term(30 * time.Second); code != 0 {
			t.Errorf("misconfigured replica %d exited %d", i, code)
		}
	}
	rejectedWrong := d.emu.Stats().RefreshRejected - d.before.RefreshRejected
	fixed := []*proc{startProxy(t, d.env), startProxy(t, d.env)}
	d.procs = append(wrong, fixed...)
	mu.Lock()
	fixAt = time.Now()
	mu.Unlock()
	setLive(fixed)
	var recovered time.Duration
	if !eventually(recoveryBound, func() bool {
		for _, id := range ids {
			if _, ok := load.firstOK(id); !ok {
				return false
			}
		}
		return true
	}) {
		t.Errorf("not every tenant served within %v of the fix", recoveryBound)
	}
	served := 0
	for _, id := range ids {
		if at, ok := load.firstOK(id); ok {
			served++
			recovered = max(recovered, at.Sub(fixAt))
		}
	}
	time.Sleep(2 * time.Second) // the load runs on the fixed deployment
	elapsed := load.Stop()

	f := &figures{}
	f.note("duration", elapsed)
	f.note("tenants", len(ids))
	f.note("refused_while_misconfigured", rejectedWrong)
	f.note("flagged_while_misconfigured", flaggedWhileWrong)
	f.note("flagged_then_reverted_by_guard", brief)
	f.note("served_after_fix", served)
	f.note("all_served_after_fix", recovered)
	f.note("reauthorizations", d.emu.Stats().CodeExchanges-d.before.CodeExchanges)
	d.conclude(fixed[0], ids, load.tally, expectations{
		rejected:     rejectedWrong, // every one with the wrong client, none after the fix
		minRefreshes: int64(len(ids)),
	}, f)
	for _, id := range ids {
		if n := d.emu.RefreshCount(id); n != 1 {
			t.Errorf("%s: %d refreshes after the fix, want 1", id, n)
		}
	}
	if load.exp503.Load() == 0 {
		t.Error("no 503 token_unavailable while misconfigured")
	}
	d.termAll()
}
