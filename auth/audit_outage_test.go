package auth_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
	"github.com/lsproxy/lsproxy/store"
)

// TestAuditOutageLongerThanWindow (reproduction from the fault audit, SPEC
// §3 rule 11): Redis (AOF always) dies while a granted refresh waits to be
// written and comes back after what used to be the write window (lock_ttl
// + 5 s from the mark). The holder keeps the only copy of the new refresh
// token and retries the write for as long as it lives: once Redis is back
// the grant is stored, nothing is sent twice, and the tenant stays active.
// Before the fix the holder gave up at the window and the successor's
// once-send was a reuse that flagged the tenant.
func TestAuditOutageLongerThanWindow(t *testing.T) {
	t.Parallel() // seconds of real waiting: overlap with the others
	emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeries, AccessTTL: time.Hour})
	emu.SetTokenHold(700 * time.Millisecond)
	srv := httptest.NewServer(emu)
	defer srv.Close()
	rs := testredis.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	keys, _ := store.NewKeyring([]byte(strings.Repeat("r", 32)))
	ctx := context.Background()
	cfg := emu.Config()
	c, err := store.DialRedis(ctx, store.RedisConfig{URL: rs.URL()})
	if err != nil {
		t.Fatal(err)
	}
	s := store.NewRedis(c, store.RedisOptions{Keys: keys})
	m := auth.NewManager(s, &auth.OAuthClient{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		TokenURL: srv.URL + emu.Paths().Token, AuthStyle: oauth2.AuthStyleInHeader, Timeout: 900 * time.Millisecond},
		auth.ManagerOptions{RefreshBefore: time.Second, LockTTL: time.Second, TokenTimeout: 900 * time.Millisecond})
	g := emu.IssueGrant("acme")
	if _, err := s.Put(ctx, &store.Tenant{ID: "acme", Status: store.StatusActive, AccessToken: g.AccessToken,
		RefreshToken: g.RefreshToken, AccessExpiresAt: time.Now().Add(-time.Second)}, 0); err != nil {
		t.Fatal(err)
	}
	marked := time.Now()
	done := make(chan error, 1)
	go func() { _, err := m.Token(ctx, "acme"); done <- err }()
	waitFor(t, 5*time.Second, "the grant at the provider", func() bool { return emu.Stats().RefreshGrants >= 1 })
	rs.Kill()                                              // grant rotated at the provider, answer held 0.7 s
	time.Sleep(8500*time.Millisecond - time.Since(marked)) // an outage past the old window (6 s + 2 s skew)
	rs.Restart()
	var holderErr error
	select {
	case holderErr = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the holder's Token never returned")
	}
	t.Logf("holder after the restart: err=%v", holderErr)
	rec, gerr := s.Get(ctx, "acme")
	if gerr != nil {
		t.Fatal(gerr)
	}
	t.Logf("after restart: in_flight=%v rt_is_old=%v", rec.RefreshInFlight, rec.RefreshToken == g.RefreshToken)
	_, err = m.Token(ctx, "acme")
	rec, _ = s.Get(ctx, "acme")
	st := emu.Stats()
	t.Logf("next acquisition: err=%v grants=%d reuse=%d status=%s reason=%q", err, st.RefreshGrants, st.ReuseDetected, rec.Status, rec.Reason)
	if rec.Status != store.StatusActive || err != nil || st.ReuseDetected != 0 {
		t.Errorf("BUG: a Redis outage longer than the write window burned the grant")
	}
	if rec.RefreshToken == g.RefreshToken || rec.RefreshInFlight || st.RefreshGrants != 1 {
		t.Errorf("the holder's grant was not stored: in_flight=%v grants=%d", rec.RefreshInFlight, st.RefreshGrants)
	}
}

// waitFor polls cond every 5 ms until it holds or d passes (then fails).
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
