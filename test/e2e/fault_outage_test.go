package e2e

import (
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
)

// tokenOutage runs a token-endpoint outage of length outage against three
// replicas with breaker_open_for 1s and refresh_before = outage. Two groups
// of tenants:
//
//   - "expiring": their tokens become unusable 1 s before the outage ends;
//     they may answer 503 token_unavailable (with Retry-After) from then
//     until shortly after the recovery, never before;
//   - "valid": their tokens enter the refresh window during the outage but
//     stay usable past it; every request must succeed.
//
// After up() everything must be back to 200 within recoveryBound.
func tokenOutage(t *testing.T, name string, outage time.Duration, tokenURL func(*deployment) string,
	down, up func(*deployment)) {
	const recoveryBound = 5 * time.Second
	const clockMargin = 300 * time.Millisecond
	rdb := testredis.Start(t)
	secs := int(outage / time.Second)
	d := newDeployment(t, name, emulator.Config{AccessTTL: time.Minute}, 0)
	d.env = with(d.env, "LSPROXY_REDIS_URL", rdb.URL(), "LSPROXY_BREAKER_OPEN_FOR", "1s",
		"LSPROXY_REFRESH_BEFORE", outage.String(), "LSPROXY_TOKEN_URL", tokenURL(d))
	for i := 0; i < 3; i++ {
		d.procs = append(d.procs, startProxy(t, d.env))
	}
	valid, expiring := tenantIDs("valid", 4), tenantIDs("expiring", 4)
	ids := append(append([]string{}, valid...), expiring...)

	d.importTenants(d.procs[0], 2*secs-1, valid...)
	unusableAt := time.Now().Add(time.Duration(secs+1)*time.Second - 2*time.Second - clockMargin)
	d.importTenants(d.procs[0], secs+1, expiring...)
	d.before = d.emu.Stats()

	down(d)
	start := time.Now()
	var recoveredAt time.Time // set before recovered is closed
	isExpiring := map[string]bool{}
	for _, id := range expiring {
		isExpiring[id] = true
	}
	recovered := make(chan struct{})
	load := startLoad(12, spread(d.procs, ids), policy{
		may503: func(tenant string, at time.Time) bool {
			if !isExpiring[tenant] || at.Before(unusableAt) {
				return false
			}
			select {
			case <-recovered:
				return at.Before(recoveredAt.Add(recoveryBound))
			default:
				return true
			}
		},
	})
	time.Sleep(outage) // the load runs against the dead token endpoint
	up(d)
	recoveredAt = time.Now()
	close(recovered)
	time.Sleep(recoveryBound) // and after its recovery
	elapsed := load.Stop()

	f := &figures{}
	f.note("duration", elapsed)
	f.note("outage", outage)
	if last := load.lastExpected503(); !last.IsZero() {
		f.note("last_503_after_recovery", last.Sub(recoveredAt))
	}
	f.note("answered_503_by_endpoint", d.emu.Stats().TokenOutages-d.before.TokenOutages)
	d.conclude(d.procs[0], ids, load.tally, expectations{minRefreshes: int64(len(ids))}, f)
	if load.exp503.Load() == 0 {
		t.Errorf("no 503 token_unavailable for the expiring tenants (started %v ago)", time.Since(start))
	}
	for _, id := range ids {
		if d.emu.RefreshCount(id) < 1 {
			t.Errorf("tenant %s not refreshed after the recovery", id)
		}
	}
	d.termAll()
}

// TestFaultTokenOutage: the token endpoint answers 503 for 8 s. No tenant
// is flagged; still-valid tokens keep serving; expired ones answer 503
// token_unavailable with Retry-After; all is back to 200 within seconds of
// the recovery (breaker_open_for 1s).
func TestFaultTokenOutage(t *testing.T) {
	tokenOutage(t, "token-endpoint-503", 8*time.Second,
		func(d *deployment) string { return d.emu.URL + d.emu.Paths().Token },
		func(d *deployment) { d.emu.SetTokenOutage(503) },
		func(d *deployment) { d.emu.SetTokenOutage(0) })
}

// TestFaultTokenUnreachable: as TestFaultTokenOutage, with the token
// endpoint refusing connections for 6 s.
func TestFaultTokenUnreachable(t *testing.T) {
	var gate *tokenGate
	tokenOutage(t, "token-endpoint-refused", 6*time.Second,
		func(d *deployment) string { gate = startTokenGate(t, d.emu); return gate.URL() },
		func(*deployment) { gate.close() },
		func(*deployment) { gate.reopen(t) })
}
