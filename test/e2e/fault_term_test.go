package e2e

import (
	"context"
	"net/http"
	"strings"
	"syscall"
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

// TestFaultTermSlowUpstream401: SIGTERM reaches a replica while a slow
// upstream request (4 s) is in flight with shutdown_timeout 5 s; the
// request ends in 401 (the upstream no longer takes the access token) after
// the drain has begun, so lsproxy forces a refresh near the end of the
// drain, and Lightspeed grants it slowly (answer held 2 s: it ends after
// the drain deadline). The refresh gets its own shutdown budget (SPEC §3
// rule 16): the new tokens are stored before the process exits 0, and the
// stored refresh token is the one Lightspeed issued last.
func TestFaultTermSlowUpstream401(t *testing.T) {
	const victim = "slow-401"
	rdb := testredis.Start(t)
	d := newDeployment(t, "sigterm-slow-upstream-401", emulator.Config{AccessTTL: 10 * time.Minute}, 2,
		"LSPROXY_REDIS_URL", rdb.URL(), "LSPROXY_SHUTDOWN_TIMEOUT", "5s")
	a, b := d.procs[0], d.procs[1]
	others := tenantIDs("steady", 4)
	ids := append(append([]string{}, others...), victim)
	d.importTenants(b, 0, others...)
	// The victim's stored access token is one the upstream does not know:
	// its first request ends in 401 while the token is still lsproxy's
	// current one, which forces one refresh and a replay.
	g := d.emu.IssueGrant(victim)
	g.AccessToken = "at-unknown-to-the-upstream-" + randomHex(8)
	g.ExpiresIn = 3600
	b.importTenant(t, victim, g)
	d.before = d.emu.Stats()
	load := startLoad(3, spread([]*proc{b}, others), policy{})

	d.emu.SetAPIDelay(4 * time.Second)
	d.emu.SetTokenHold(2 * time.Second)
	api, unauthorized := d.emu.Stats().APIRequests, d.emu.Stats().APIUnauthorized
	type answer struct {
		r   result
		err error
	}
	slow := make(chan answer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, err := a.get(ctx, victim, faultPath)
		slow <- answer{r, err}
	}()
	if !eventually(5*time.Second, func() bool { return d.emu.Stats().APIRequests > api }) {
		t.Fatal("the slow request did not reach the upstream")
	}
	termAt := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !eventually(10*time.Second, func() bool { return d.emu.Stats().APIUnauthorized > unauthorized }) {
		t.Fatal("the slow request did not end in 401")
	}
	unauthorizedAt := time.Since(termAt)
	d.emu.SetAPIDelay(0) // the replay, and everyone else, is fast again
	code := a.Wait(60 * time.Second)
	exitAfter := time.Since(termAt)
	d.emu.SetTokenHold(0)
	ans := <-slow

	after := b.getTenant(t, victim)
	if code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
	if n := d.emu.RefreshCount(victim); n != 1 {
		t.Errorf("%s refreshed %d times before the exit, want 1 (forced by the 401)", victim, n)
	}
	if after.RefreshInFlight || after.RefreshCount != 1 {
		t.Errorf("the refresh forced by the 401 was not stored before exit: %+v", after)
	}
	b.expectServes(t, victim) // with the stored token: no refresh needed
	if n := d.emu.RefreshCount(victim); n != 1 {
		t.Errorf("%s refreshed %d times after the exit, want 1", victim, n)
	}
	// The stored refresh token is the one Lightspeed issued last: it works.
	if r := b.admin(t, http.MethodPost, "/admin/tenants/"+victim+"/refresh", nil); r.Status != http.StatusOK {
		t.Errorf("forced refresh with the stored token: %d %s", r.Status, r.Body)
	}
	elapsed := load.Stop()

	f := &figures{}
	f.note("duration", elapsed)
	f.note("exit_code", code)
	f.note("upstream_401_after_sigterm", unauthorizedAt)
	f.note("exit_after_sigterm", exitAfter)
	switch {
	case ans.err != nil:
		f.note("slow_request", "cut_at_exit")
	default:
		f.note("slow_request", ans.r.Status)
		if ans.r.Status == http.StatusOK && ans.r.str("tenant") != victim {
			t.Errorf("the slow request got the data of %q", ans.r.str("tenant"))
		}
	}
	d.conclude(b, ids, load.tally, expectations{minRefreshes: 2}, f)
	d.termAll()
}
