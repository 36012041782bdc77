package audit3lease_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/defect"
	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/ratelimit"
	"github.com/lsproxy/lsproxy/store"
)

// AUDIT3-F1 (SPEC §3 rule 13): ratelimit.TokenTransport (wired in
// cmd/lsproxy/serve.go whenever the governor is on) waits for pacing until
// "its context's deadline" minus 100 ms, and that deadline is the token
// request's own token_timeout (auth.sendGrant / OAuthClient.do). A token
// request paced for most of token_timeout is then written to the network
// with almost nothing left of it; a provider that answers within
// token_timeout of the *send* is abandoned, the rotation it committed is
// lost, and the tenant is later flagged "interrupted" (the spent token is
// sent again by the takeover).
//
// Interleaving: the token endpoint answers one refresh with 429
// Retry-After: 4 (the transport learns a block for token@host); the next
// tenant's refresh (token_timeout 5 s) is paced 4 s, sent with <1 s left,
// and the provider answers 1.5 s after the send.
func TestAudit3PacingEatsTokenTimeout(t *testing.T) { pacingScenario(t, t.Errorf, true) }

// TestAudit3PacingDefectFailsAgain: with defect 1 (PacingInsideTimeout)
// switched on, the reproduction's first assertion fails again: the paced
// request is abandoned before the provider's answer.
func TestAudit3PacingDefectFailsAgain(t *testing.T) {
	defer defect.Enable(defect.PacingInsideTimeout)()
	var failures []string
	pacingScenario(t, func(format string, args ...any) { failures = append(failures, fmt.Sprintf(format, args...)) }, false)
	if len(failures) == 0 {
		t.Fatal("with the defect on, the pacing reproduction passed: it no longer tells the defect apart")
	}
	t.Logf("with the defect on: %s", failures[0])
}

// pacingScenario runs the interleaving and reports each violation with
// errorf; takeover also runs the consequence (the takeover sends the spent
// token).
func pacingScenario(t *testing.T, errorf func(format string, args ...any), takeover bool) {
	emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeries, AccessTTL: time.Hour})
	var first atomic.Bool
	var sentAt atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == emu.Paths().Token && first.CompareAndSwap(false, true) {
			w.Header().Set("Retry-After", "4")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":"rate_limited"}`))
			return
		}
		if r.URL.Path == emu.Paths().Token {
			sentAt.Store(time.Now().UnixNano())
		}
		emu.ServeHTTP(w, r)
	}))
	defer srv.Close()

	gov := &ratelimit.Governor{Backend: ratelimit.NewMemory(), Wait: time.Second}
	hc := &http.Client{Transport: &ratelimit.TokenTransport{Governor: gov, Base: http.DefaultTransport}}
	const tokenTimeout = 5 * time.Second
	s := boltStore(t)
	m := auth.NewManager(s, oauthClient(emu, srv.URL, tokenTimeout, hc), auth.ManagerOptions{
		TokenTimeout: tokenTimeout, LockTTL: time.Second, GuardThreshold: -1})
	ctx := context.Background()
	putTenant(t, s, emu, "other")
	putTenant(t, s, emu, "victim")

	// 1. Any refresh meets the 429: nothing consumed, the host is now paced.
	if _, err := m.Token(ctx, "other"); err == nil {
		t.Fatal("expected the 429 to fail the first refresh")
	}
	// 2. The victim's refresh: paced, then sent.
	emu.SetTokenHold(1500 * time.Millisecond) // the provider answers 1.5 s after it got the request
	start := time.Now()
	_, err := m.Token(ctx, "victim")
	took := time.Since(start)
	st := emu.Stats()
	rec, _ := s.Get(ctx, "victim")
	sentAfter := time.Duration(0)
	if n := sentAt.Load(); n != 0 {
		sentAfter = time.Unix(0, n).Sub(start)
	}
	t.Logf("victim: err=%v after %v; request reached the endpoint %v after the refresh started (token_timeout %v); emulator grants=%d lost=%d; stored in_flight=%v",
		err, took.Round(10*time.Millisecond), sentAfter.Round(10*time.Millisecond), tokenTimeout, st.RefreshGrants, st.GrantsLost, rec.RefreshInFlight)
	if err != nil || st.GrantsLost != 0 {
		errorf("rule 13: the token request was sent with %v of its %v token_timeout left and abandoned before the provider's answer (due 1.5 s after the request arrived): err=%v; the provider had rotated (grants=%d)",
			(tokenTimeout - sentAfter).Round(10*time.Millisecond), tokenTimeout, err, st.RefreshGrants)
	}

	// 3. Consequence: the takeover sends the spent refresh token and the
	// tenant is flagged.
	if !takeover {
		return
	}
	emu.SetTokenHold(0)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		_, err = m.Token(ctx, "victim")
		if err == nil || errors.Is(err, auth.ErrReauthorizationRequired) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	rec, _ = s.Get(ctx, "victim")
	st = emu.Stats()
	t.Logf("after the takeover: err=%v status=%s reason=%q reuse=%d", err, rec.Status, rec.Reason, st.ReuseDetected)
	if rec.Status != store.StatusActive {
		errorf("tenant flagged %q (reuse detected %d): a live grant was burned by pacing", rec.Reason, st.ReuseDetected)
	}
}
