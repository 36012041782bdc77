package emulator_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
)

func TestBrownoutLatencyCommitsFirst(t *testing.T) {
	t.Run("slow grant", func(t *testing.T) {
		v := start(t, emulator.Config{})
		g := v.em.IssueGrant("t1")
		v.em.SetTokenBrownout(emulator.Brownout{MinLatency: 100 * time.Millisecond, MaxLatency: 200 * time.Millisecond})
		began := time.Now()
		tokens(t, v.refresh(g.RefreshToken))
		if d := time.Since(began); d < 100*time.Millisecond {
			t.Errorf("answered after %s, want >= 100ms", d)
		}
		if s := v.em.Stats(); s.GrantsLost != 0 || s.RefreshGrants != 1 {
			t.Errorf("stats %+v", s)
		}
	})
	t.Run("abandoned grant is committed and lost", func(t *testing.T) {
		v := start(t, emulator.Config{})
		g := v.em.IssueGrant("t1")
		v.em.SetTokenBrownout(emulator.Brownout{MinLatency: time.Minute})
		abandon(t, v, g.RefreshToken)
		if s := v.em.Stats(); s.TokenAbandoned != 1 || s.GrantsLost != 1 || s.RefreshGrants != 1 {
			t.Fatalf("stats %+v", s)
		}
		v.em.SetTokenBrownout(emulator.Brownout{})
		reopen(t, v)
		// The token rotated although the client never saw it: retrying is reuse.
		wantOAuthError(t, v.refresh(g.RefreshToken), http.StatusBadRequest, "invalid_grant")
		if s := v.em.Stats(); s.ReuseDetected != 1 {
			t.Errorf("stats %+v", s)
		}
	})
	t.Run("rejections are not slowed", func(t *testing.T) {
		v := start(t, emulator.Config{})
		v.em.SetTokenBrownout(emulator.Brownout{MinLatency: time.Minute})
		done := make(chan result, 1)
		go func() { done <- v.refresh("rt-unknown") }()
		select {
		case r := <-done:
			wantOAuthError(t, r, http.StatusBadRequest, "invalid_grant")
		case <-time.After(20 * time.Second):
			t.Fatal("an invalid_grant answer waited for the brownout latency")
		}
	})
}

func TestBrownoutBursts(t *testing.T) {
	t.Run("always", func(t *testing.T) {
		v := start(t, emulator.Config{})
		g := v.em.IssueGrant("t1")
		v.em.SetTokenBrownout(emulator.Brownout{BurstEvery: time.Hour, BurstFor: time.Hour})
		if r := v.refresh(g.RefreshToken); r.status != http.StatusServiceUnavailable {
			t.Fatalf("in a burst: %d %s, want 503", r.status, r.raw)
		}
		if s := v.em.Stats(); s.TokenOutages != 1 || s.RefreshGrants != 0 {
			t.Fatalf("stats %+v", s)
		}
		v.em.SetTokenBrownout(emulator.Brownout{})
		tokens(t, v.refresh(g.RefreshToken)) // nothing was spent in the burst
	})
	t.Run("periodic", func(t *testing.T) {
		v := start(t, emulator.Config{})
		rt := v.em.IssueGrant("t1").RefreshToken
		v.em.SetTokenBrownout(emulator.Brownout{BurstEvery: 200 * time.Millisecond, BurstFor: 100 * time.Millisecond})
		var ok, burst int
		deadline := time.Now().Add(20 * time.Second)
		for (ok == 0 || burst == 0) && time.Now().Before(deadline) {
			switch r := v.refresh(rt); r.status {
			case http.StatusOK:
				ok++
				_, rt = tokens(t, r)
			case http.StatusServiceUnavailable:
				burst++
			default:
				t.Fatalf("got %d %s", r.status, r.raw)
			}
			time.Sleep(15 * time.Millisecond) // walk through the burst pattern
		}
		if ok == 0 || burst == 0 {
			t.Fatalf("%d grants, %d burst answers: want both", ok, burst)
		}
		if s := v.em.Stats(); s.TokenOutages != int64(burst) || s.RefreshGrants != int64(ok) || s.ReuseDetected != 0 {
			t.Errorf("stats %+v (ok %d, burst %d)", s, ok, burst)
		}
	})
}

func TestOtherClients(t *testing.T) {
	v := start(t, emulator.Config{OtherClients: map[string]string{"second-app": "second-secret"}})
	g := v.em.IssueGrant("t1")
	as := func(id, secret, rt string) result {
		t.Helper()
		f := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
		req, _ := http.NewRequest(http.MethodPost, v.srv.URL+v.em.Paths().Token, strings.NewReader(f.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(id, secret)
		return do(t, req)
	}
	// The second client authenticates, but the grant is the first client's.
	wantOAuthError(t, as("second-app", "second-secret", g.RefreshToken), http.StatusBadRequest, "invalid_grant")
	wantOAuthError(t, as("second-app", v.cfg.ClientSecret, g.RefreshToken), http.StatusUnauthorized, "invalid_client")
	wantOAuthError(t, as("unknown-app", "second-secret", g.RefreshToken), http.StatusUnauthorized, "invalid_client")
	// Nothing was spent: the owner's refresh works.
	tokens(t, as(v.cfg.ClientID, v.cfg.ClientSecret, g.RefreshToken))
	if s := v.em.Stats(); s.ReuseDetected != 0 || s.RefreshGrants != 1 || s.ClientAuthFailures != 2 {
		t.Errorf("stats %+v", s)
	}
}

func TestControlBrownout(t *testing.T) {
	v := start(t, emulator.Config{})
	ctl := httptest.NewServer(v.em.ControlHandler())
	defer ctl.Close()
	for _, c := range []struct {
		path   string
		status int
	}{
		{"/token-brownout?min=1s&max=2s&every=5s&for=1s", 204},
		{"/token-brownout?min=soon", 400},
		{"/token-brownout?for=-1s", 400},
		{"/token-brownout?every=1h&for=1h", 204},
	} {
		req, _ := http.NewRequest(http.MethodPost, ctl.URL+c.path, nil)
		if r := do(t, req); r.status != c.status {
			t.Errorf("POST %s: %d, want %d", c.path, r.status, c.status)
		}
	}
	if r := v.refresh(v.em.IssueGrant("t1").RefreshToken); r.status != http.StatusServiceUnavailable {
		t.Errorf("burst via control: %d", r.status)
	}
	req, _ := http.NewRequest(http.MethodPost, ctl.URL+"/token-brownout", nil)
	if r := do(t, req); r.status != 204 {
		t.Fatalf("ending the brownout: %d", r.status)
	}
	tokens(t, v.refresh(v.em.IssueGrant("t2").RefreshToken))
}
