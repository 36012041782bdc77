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
	"github.com/lsproxy/lsproxy/store"
)

// TestAuditTokenRequestBudget (reproduction from the fault audit, SPEC §3
// rule 13): the token request used to run on what was left of the
// acquisition budget after the lock wait, not on token_timeout; a provider
// answer slower than that remainder (but well within token_timeout) was
// abandoned after the provider rotated, and the successor's once-send was
// a reuse. Now every request gets a full token_timeout whatever the wait.
func TestAuditTokenRequestBudget(t *testing.T) {
	t.Parallel() // seconds of real waiting: overlap with the others
	for _, lockedFor := range []time.Duration{0, 5500 * time.Millisecond} {
		t.Run(lockedFor.String(), func(t *testing.T) {
			emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeries, AccessTTL: time.Hour})
			emu.SetTokenHold(600 * time.Millisecond) // rotates, answers after 0.6 s
			srv := httptest.NewServer(emu)
			defer srv.Close()
			keys, _ := store.NewKeyring([]byte(strings.Repeat("r", 32)))
			s, err := store.OpenBolt(t.TempDir(), keys)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			g := emu.IssueGrant("acme")
			ctx := context.Background()
			if _, err := s.Put(ctx, &store.Tenant{ID: "acme", Status: store.StatusActive, AccessToken: g.AccessToken,
				RefreshToken: g.RefreshToken, AccessExpiresAt: time.Now().Add(-time.Second)}, 0); err != nil {
				t.Fatal(err)
			}
			cfg := emu.Config()
			// token_timeout 0.9 s, lock_ttl 1 s: WaitFor derived = 1 + 4 + 5 = 10 s.
			m := auth.NewManager(s, &auth.OAuthClient{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
				TokenURL: srv.URL + emu.Paths().Token, AuthStyle: oauth2.AuthStyleInHeader, Timeout: 900 * time.Millisecond},
				auth.ManagerOptions{RefreshBefore: time.Second, LockTTL: time.Second, TokenTimeout: 900 * time.Millisecond})
			if lockedFor > 0 {
				// Other holders (replicas/attempts in turn) kept the lock for most of the budget.
				if _, err := s.TryLock(ctx, "tenant:acme", lockedFor); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			tok, err := m.Token(ctx, "acme")
			rec, _ := s.Get(ctx, "acme")
			st := emu.Stats()
			t.Logf("after %v: tok=%v err=%v; emulator grants=%d abandoned=%d; stored in_flight=%v rt_unchanged=%v",
				time.Since(start).Round(10*time.Millisecond), tok.AccessToken != "", err, st.RefreshGrants, st.TokenAbandoned,
				rec.RefreshInFlight, rec.RefreshToken == g.RefreshToken)
			if st.RefreshGrants == 1 && rec.RefreshToken == g.RefreshToken {
				t.Errorf("BUG: provider rotated but the new refresh token was never stored (request cut at the remaining budget)")
			}
			if err != nil || st.TokenAbandoned != 0 || st.RefreshGrants != 1 || rec.RefreshInFlight {
				t.Errorf("want one grant, stored, nothing abandoned: err=%v grants=%d abandoned=%d in_flight=%v",
					err, st.RefreshGrants, st.TokenAbandoned, rec.RefreshInFlight)
			}
			// The next acquisition uses the stored grant: no reuse.
			if _, err = m.ForceRefresh(ctx, "acme"); err != nil {
				t.Errorf("next refresh: %v", err)
			}
			if st = emu.Stats(); st.ReuseDetected != 0 {
				t.Errorf("reuse = %d", st.ReuseDetected)
			}
		})
	}
}
