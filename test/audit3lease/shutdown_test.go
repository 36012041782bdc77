package audit3lease_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/emulator"
)

// AUDIT3-F7 (SPEC §3 rules 13 and 16): FinishRefreshes gives acquisitions
// that already started a fixed budget from its call
// (auth.ShutdownBudget = token_timeout + 10 s, serve.go), but nothing stops
// such an acquisition from *sending* late in that budget: one that waited
// for another replica's lock (WaitFor, default 15 s, is longer than
// token_timeout) takes the lock near the end, sends the refresh token with
// less than token_timeout of the budget left, and the process exits
// (serve.go returns once FinishRefreshes gives up) with the request
// unanswered or its grant unwritten: the provider has rotated, the new
// refresh token dies with the process.
//
// Here: token_timeout 2 s, budget 12 s, the lock held by another replica
// for 11.5 s after shutdown began, the provider answers 1.5 s after the
// request arrives (well within token_timeout).
func TestAudit3ShutdownBudgetEndsDuringLateSend(t *testing.T) {
	emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeries, AccessTTL: time.Hour})
	emu.SetTokenHold(1500 * time.Millisecond)
	srv := httptest.NewServer(emu)
	defer srv.Close()
	shared := boltStore(t)
	g := putTenant(t, shared, emu, "acme")
	ctx := context.Background()
	const tokenTimeout = 2 * time.Second
	m := auth.NewManager(shared, oauthClient(emu, srv.URL, tokenTimeout, nil), auth.ManagerOptions{
		// WaitFor 15 s (the default when this was found): the waiter
		// takes the lock at 11.5 s, late in the budget.
		TokenTimeout: tokenTimeout, GuardThreshold: -1, WaitFor: 15 * time.Second})
	// Another replica holds the tenant's lock (its own slow attempt, which
	// ends without a write and lets the lock go at 11.5 s).
	if _, err := shared.TryLock(ctx, "tenant:acme", 11500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = m.Token(ctx, "acme") }() // a request just before SIGTERM
	time.Sleep(50 * time.Millisecond)

	start := time.Now()
	budget := auth.ShutdownBudget(tokenTimeout)
	rctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	err := m.FinishRefreshes(rctx) // serve.go: then the process exits
	returned := time.Since(start)
	st := emu.Stats()
	rec, _ := shared.Get(ctx, "acme")
	t.Logf("FinishRefreshes(budget %v) = %v after %v; at that moment: provider grants=%d (rotated), stored refresh token rotated=%v, in_flight=%v",
		budget, err, returned.Round(10*time.Millisecond), st.RefreshGrants, rec.RefreshToken != g.RefreshToken, rec.RefreshInFlight)
	if err != nil && st.RefreshGrants > 0 && rec.RefreshToken == g.RefreshToken {
		t.Errorf("shutdown gave up while a refresh sent after it began was unanswered or unwritten: the provider rotated the token, the new one is only in this exiting process")
	}
	time.Sleep(2 * time.Second) // (the refresh would have landed here)
}
