package auth_test

import (
	"context"
	"errors"
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

// TestTakeoverAfterHolderDied (SPEC §3 rule 11): a holder SIGKILLed after
// its lock and mark leaves exactly that behind: a lock that is no longer
// renewed and a mark whose writer is gone. With default settings the
// survivor serves the tenant (the provider never saw the request) or flags
// it "interrupted" (the provider had rotated) within 15 s of the mark.
func TestTakeoverAfterHolderDied(t *testing.T) {
	t.Parallel() // seconds of real waiting: overlap with the others
	rs := testredis.Start(t)
	for _, committed := range []bool{false, true} {
		name := "not_committed"
		if committed {
			name = "committed"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeries, AccessTTL: time.Hour})
			srv := httptest.NewServer(emu)
			defer srv.Close()
			keys, _ := store.NewKeyring([]byte(strings.Repeat("r", 32)))
			ctx := context.Background()
			c, err := store.DialRedis(ctx, store.RedisConfig{URL: rs.URL()})
			if err != nil {
				t.Fatal(err)
			}
			s := store.NewRedis(c, store.RedisOptions{Keys: keys, Prefix: "takeover-" + name + ":"})
			cfg := emu.Config()
			oc := &auth.OAuthClient{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
				TokenURL: srv.URL + emu.Paths().Token, AuthStyle: oauth2.AuthStyleInHeader}
			g := emu.IssueGrant("acme")
			rec := &store.Tenant{ID: "acme", Status: store.StatusActive, AccessToken: g.AccessToken,
				RefreshToken: g.RefreshToken, AccessExpiresAt: time.Now().Add(-time.Second)}
			if _, err := s.Put(ctx, rec, 0); err != nil {
				t.Fatal(err)
			}

			// The dead holder: lock and mark with the defaults, then nothing.
			if _, err := s.TryLock(ctx, "tenant:acme", auth.DefaultLockTTL); err != nil {
				t.Fatal(err)
			}
			died := time.Now()
			rec.MarkRefresh(store.Mark{ID: "dead-holder", StartedAt: died, Lease: auth.DefaultLockTTL, Grace: auth.DefaultTakeoverGrace})
			if _, err := s.Put(ctx, rec, 1); err != nil {
				t.Fatal(err)
			}
			if committed { // its request reached the provider, the answer died with it
				if _, err := oc.Refresh(ctx, rec); err != nil {
					t.Fatal(err)
				}
			}

			m := auth.NewManager(s, oc, auth.ManagerOptions{})
			var tok auth.Token
			deadline := died.Add(20 * time.Second)
			for {
				tok, err = m.Token(ctx, "acme")
				if err == nil || errors.Is(err, auth.ErrReauthorizationRequired) || time.Now().After(deadline) {
					break
				}
			}
			took := time.Since(died)
			st := emu.Stats()
			after, _ := s.Get(ctx, "acme")
			t.Logf("takeover after %v: err=%v status=%s reason=%q grants=%d reuse=%d", took.Round(10*time.Millisecond), err, after.Status, after.Reason, st.RefreshGrants, st.ReuseDetected)
			if took > 15*time.Second {
				t.Errorf("takeover took %v, want within 15 s", took)
			}
			if took < auth.DefaultLockTTL {
				t.Errorf("took over after %v, before the dead holder's lease (%v) ran out", took, auth.DefaultLockTTL)
			}
			if committed {
				var re *auth.ReauthError
				if !errors.As(err, &re) || re.Reason != auth.ReasonInterrupted {
					t.Errorf("committed: err = %v, want the interrupted flag", err)
				}
			} else if err != nil || tok.AccessToken == "" || after.Status != store.StatusActive || after.RefreshInFlight {
				t.Errorf("not committed: err = %v, status %s in_flight %v", err, after.Status, after.RefreshInFlight)
			}
		})
	}
}
