package e2e

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
)

// TestFaultRevocation: one tenant among ten is revoked at Lightspeed
// under load (3 s tokens, three replicas). Only that tenant is flagged,
// with a reason naming invalid_grant; its requests answer 401 (the
// upstream's own until lsproxy's next refresh is refused, then
// reauthorization_required, on every replica); every other request
// succeeds.
func TestFaultRevocation(t *testing.T) {
	const victim = "revoked"
	rdb := testredis.Start(t)
	d := newDeployment(t, "revocation", emulator.Config{AccessTTL: 3 * time.Second}, 3,
		"LSPROXY_REDIS_URL", rdb.URL(), "LSPROXY_REFRESH_BEFORE", "1s")
	ids := append(tenantIDs("healthy", 9), victim)
	d.importTenants(d.procs[0], 0, ids...)

	var (
		mu        sync.Mutex
		revokedAt time.Time
		flaggedAt time.Time // first reauthorization_required answer
	)
	// Between the revocation and the flag, lsproxy cannot tell a revoked
	// token from an expired one when the upstream rejects it within a
	// second of its expiry (proxy/transport.go, expiryEdge): that request
	// answers 503 token_unavailable, which the caller retries.
	inTransition := func(at time.Time) bool {
		return !revokedAt.IsZero() && !at.Before(revokedAt) && (flaggedAt.IsZero() || at.Before(flaggedAt.Add(time.Second)))
	}
	load := startLoad(12, spread(d.procs, ids), policy{
		may503: func(tenant string, at time.Time) bool {
			mu.Lock()
			defer mu.Unlock()
			return tenant == victim && inTransition(at)
		},
		may401: func(tenant string, r result, at time.Time) bool {
			mu.Lock()
			defer mu.Unlock()
			if tenant != victim || revokedAt.IsZero() {
				return false
			}
			if r.Header.Get("X-Lsproxy-Error") == "reauthorization_required" && strings.Contains(r.str("reason"), "invalid_grant") {
				if flaggedAt.IsZero() {
					flaggedAt = at
				}
				return true
			}
			// Until the flag: the upstream's own 401 for the revoked token.
			return r.Header.Get("X-Lsproxy-Error") == "" && inTransition(at)
		},
	})
	time.Sleep(3 * time.Second) // the load runs
	d.emu.Revoke(victim)
	mu.Lock()
	revokedAt = time.Now()
	mu.Unlock()
	time.Sleep(6 * time.Second) // two token lifetimes more
	elapsed := load.Stop()

	f := &figures{}
	f.note("duration", elapsed)
	mu.Lock()
	if flaggedAt.IsZero() {
		t.Errorf("no request for %s was answered reauthorization_required", victim)
	} else {
		f.note("flagged_after_revoke", flaggedAt.Sub(revokedAt))
	}
	mu.Unlock()
	d.conclude(d.procs[1], ids, load.tally, expectations{
		flagged:      map[string]string{victim: "invalid_grant"},
		rejected:     1,
		minRefreshes: int64(len(ids)) * 2,
	}, f)
	for i, p := range d.procs {
		r := p.mustGet(t, victim, faultPath)
		if r.Status != http.StatusUnauthorized || r.Header.Get("X-Lsproxy-Error") != "reauthorization_required" {
			t.Errorf("replica %d, %s after the flag: %d %s", i, victim, r.Status, r.Body)
		}
	}
	d.termAll()
}
