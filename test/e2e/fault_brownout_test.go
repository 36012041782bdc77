package e2e

import (
	"sync"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
)

// TestFaultTokenBrownout: the token endpoint browns out for 25 s under
// three replicas contending for six tenants whose 6 s tokens are refreshed
// all the time: every answer takes 2–3 s (token_timeout 4 s, so close
// to it), a grant is committed before its slow answer leaves (a request
// given up early burns its refresh token), and for the first 2 s of every
// 5 s the endpoint answers 503. lsproxy never abandons a request the
// provider may commit (SPEC §3 rule 13: a full token_timeout for every
// token request, lock waiting included), so no grant is lost (emulator
// GrantsLost = 0) and no token is reused; expired tokens answer 503
// token_unavailable while the endpoint refuses, and everything is back to
// 200 within seconds of the end.
func TestFaultTokenBrownout(t *testing.T) {
	const (
		brownout      = 25 * time.Second
		recoveryBound = 8 * time.Second
	)
	rdb := testredis.Start(t)
	d := newDeployment(t, "token-brownout-25s", emulator.Config{AccessTTL: 6 * time.Second}, 3,
		"LSPROXY_REDIS_URL", rdb.URL(), "LSPROXY_REFRESH_BEFORE", "3s",
		"LSPROXY_TOKEN_TIMEOUT", "4s", "LSPROXY_BREAKER_OPEN_FOR", "1s")
	ids := tenantIDs("brownout", 6)
	d.importTenants(d.procs[0], 0, ids...)

	var (
		mu             sync.Mutex
		startAt, endAt time.Time
	)
	load := startLoad(9, spread(d.procs, ids), policy{
		may503: func(_ string, at time.Time) bool {
			mu.Lock()
			defer mu.Unlock()
			return !startAt.IsZero() && !at.Before(startAt) && (endAt.IsZero() || at.Before(endAt.Add(recoveryBound)))
		},
	})
	time.Sleep(2 * time.Second) // normal service first
	mu.Lock()
	startAt = time.Now()
	mu.Unlock()
	d.emu.SetTokenBrownout(emulator.Brownout{
		MinLatency: 2 * time.Second, MaxLatency: 3 * time.Second,
		BurstEvery: 5 * time.Second, BurstFor: 2 * time.Second,
	})
	time.Sleep(brownout) // the load runs through the brownout
	d.emu.SetTokenBrownout(emulator.Brownout{})
	mu.Lock()
	endAt = time.Now()
	mu.Unlock()
	atEnd := map[string]int{}
	for _, id := range ids {
		atEnd[id] = d.emu.RefreshCount(id)
	}
	time.Sleep(recoveryBound) // and after it
	elapsed := load.Stop()

	st := d.emu.Stats()
	f := &figures{}
	f.note("duration", elapsed)
	f.note("brownout", brownout)
	f.note("answered_503_by_endpoint", st.TokenOutages-d.before.TokenOutages)
	f.note("grants_lost_by_endpoint", st.GrantsLost-d.before.GrantsLost)
	f.note("token_requests_abandoned", st.TokenAbandoned-d.before.TokenAbandoned)
	if last := load.lastExpected503(); !last.IsZero() {
		f.note("last_503_after_end", last.Sub(endAt))
	}
	d.conclude(d.procs[0], ids, load.tally, expectations{minRefreshes: int64(len(ids)) * 2}, f)
	if n := st.GrantsLost - d.before.GrantsLost; n != 0 {
		t.Errorf("%d grants were committed by the endpoint and abandoned by lsproxy", n)
	}
	if st.TokenOutages == d.before.TokenOutages {
		t.Error("the brownout's bursts answered no 503: the scenario did not test them")
	}
	for _, id := range ids {
		if d.emu.RefreshCount(id) <= atEnd[id] {
			t.Errorf("%s not refreshed after the brownout", id)
		}
	}
	d.termAll()
}
