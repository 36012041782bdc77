package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
)

// TestFaultTermDuringRefresh: SIGTERM reaches the replica holding a
// tenant's lock after Lightspeed granted the refresh and while its answer
// is still on the way (held 1.5 s), and after the client that caused the
// refresh gave up, so no HTTP request keeps the process alive. The process
// waits for the refresh, stores the new tokens, and exits 0; the stored
// refresh token is the new one (a later refresh with it is accepted).
func TestFaultTermDuringRefresh(t *testing.T) {
	const victim = "terminated"
	rdb := testredis.Start(t)
	d := newDeployment(t, "sigterm-during-refresh", emulator.Config{AccessTTL: time.Minute}, 3,
		"LSPROXY_REDIS_URL", rdb.URL(), "LSPROXY_REFRESH_BEFORE", "5s")
	others := tenantIDs("steady", 6)
	ids := append(append([]string{}, others...), victim)
	a, b := d.procs[0], d.procs[1]
	d.importTenants(b, 0, others...)
	d.importTenants(b, 1, victim)
	d.before = d.emu.Stats()
	load := startLoad(6, spread(d.procs[1:], others), policy{})

	d.emu.SetTokenHold(1500 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := a.get(ctx, victim, faultPath) // starts A's refresh; the client leaves after 300 ms
	cancel()
	if err == nil {
		t.Fatal("the request answered although its refresh is held for 1.5 s")
	}
	if !eventually(5*time.Second, func() bool { return d.emu.RefreshCount(victim) == 1 }) {
		t.Fatalf("the refresh was not granted (%d grants)", d.emu.RefreshCount(victim))
	}
	before := b.getTenant(t, victim)
	if !before.RefreshInFlight {
		t.Fatalf("no refresh in flight for %s: %+v", victim, before)
	}
	start := time.Now()
	code := a.Term(30 * time.Second)
	took := time.Since(start)
	d.emu.SetTokenHold(0)

	after := b.getTenant(t, victim)
	if code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
	if after.RefreshInFlight || after.Version <= before.Version || after.RefreshCount != before.RefreshCount+1 {
		t.Errorf("the refresh result was not stored before exit: before %+v, after %+v", before, after)
	}
	if strings.Contains(a.Logs(), "refreshes still running at shutdown deadline") {
		t.Errorf("shutdown gave up on the refresh:\n%s", tail(a.Logs(), 4000))
	}
	b.expectServes(t, victim) // with the stored token: no refresh needed
	if n := d.emu.RefreshCount(victim); n != 1 {
		t.Errorf("%s refreshed %d times, want 1", victim, n)
	}
	// The stored refresh token is the one Lightspeed issued last: it works.
	if r := b.admin(t, http.MethodPost, "/admin/tenants/"+victim+"/refresh", nil); r.Status != http.StatusOK {
		t.Errorf("forced refresh with the stored token: %d %s", r.Status, r.Body)
	}
	elapsed := load.Stop()

	f := &figures{}
	f.note("duration", elapsed)
	f.note("exit_code", code)
	f.note("exit_after_sigterm", took)
	d.conclude(b, ids, load.tally, expectations{minRefreshes: 2}, f)
	d.termAll()
}
