package e2e

import (
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
)

// TestFaultExpiryChurn: three replicas, 12 tenants whose access tokens live
// 3 s, 12 clients for 12 s; the background refresher (every 2 s) competes
// with the request path. Every request succeeds, no refresh token is ever
// presented twice.
func TestFaultExpiryChurn(t *testing.T) {
	const tenants, clients, duration = 12, 12, 12 * time.Second
	rdb := testredis.Start(t)
	d := newDeployment(t, "expiry-churn", emulator.Config{AccessTTL: 3 * time.Second}, 3,
		"LSPROXY_REDIS_URL", rdb.URL(), "LSPROXY_REFRESH_BEFORE", "1s", "LSPROXY_REFRESHER_INTERVAL", "2s")
	ids := tenantIDs("churn", tenants)
	d.importTenants(d.procs[0], 0, ids...)

	load := startLoad(clients, spread(d.procs, ids), policy{})
	time.Sleep(duration) // the load runs meanwhile
	elapsed := load.Stop()

	f := &figures{}
	f.note("duration", elapsed)
	f.note("tenants", tenants)
	f.note("token_ttl", "3s")
	// 3 s tokens refreshed 1 s ahead: at least one refresh per tenant every
	// 2 s; ask for half of that.
	d.conclude(d.procs[1], ids, load.tally, expectations{minRefreshes: int64(tenants) * int64(duration/(4*time.Second))}, f)
	d.termAll()
}
