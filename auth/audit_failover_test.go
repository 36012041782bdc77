package auth_test

import (
	"context"
	"fmt"
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

// TestAuditFailoverLosesLockAndMark (reproduction from the fault audit,
// SPEC §3 rules 12 and 14): an asynchronously replicated failover whose
// replica lagged while holder A wrote its lock and in-flight mark. The
// promoted replica has the record at the pre-mark version and no lock key,
// so holder B sends the same refresh token again (a reuse) and A's fenced
// write then won over B's mark because the version number repeated (ABA).
//
// With WAIT (rule 14) A sends nothing until a replica acknowledged its
// lock and mark: with the replica frozen it answers token_unavailable
// after the 2 s bound, and
// after the failover B's refresh is the only one. The negative control
// turns WAIT off and must see the reuse (the test can fail); in it A's
// write must also not land over B's mark (rule 12).
func TestAuditFailoverLosesLockAndMark(t *testing.T) {
	t.Parallel() // seconds of real waiting: overlap with the others
	for _, tc := range []struct {
		name      string
		wait      int
		wantReuse bool
	}{{"wait", 1, false}, {"no_wait_negative_control", 0, true}} {
		t.Run(tc.name, func(t *testing.T) {
			emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeries, AccessTTL: time.Hour})
			emu.SetTokenHold(1500 * time.Millisecond)
			srv := httptest.NewServer(emu)
			defer srv.Close()
			master := testredis.Start(t, "--repl-diskless-sync-delay", "0")
			replica := testredis.Start(t, "--replicaof", "127.0.0.1", fmt.Sprint(master.Port()))
			keys, _ := store.NewKeyring([]byte(strings.Repeat("r", 32)))
			ctx := context.Background()
			raw, rawReplica := master.Client(), replica.Client()
			waitFor(t, 10*time.Second, "the replica to sync", func() bool {
				s, err := raw.Info(ctx, "replication").Result()
				return err == nil && strings.Contains(s, "connected_slaves:1") && strings.Contains(s, "state=online")
			})
			cfg := emu.Config()
			newM := func() (*auth.Manager, *store.Redis) {
				c, err := store.DialRedis(ctx, store.RedisConfig{URL: master.URL()})
				if err != nil {
					t.Fatal(err)
				}
				s := store.NewRedis(c, store.RedisOptions{Keys: keys, WaitReplicas: tc.wait, WaitTimeout: 2 * time.Second})
				if info, err := s.DetectReplicas(ctx); err != nil || info.Connected != 1 || info.Wait != tc.wait {
					t.Fatalf("DetectReplicas = %+v, %v", info, err)
				}
				return auth.NewManager(s, &auth.OAuthClient{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
					TokenURL: srv.URL + emu.Paths().Token, AuthStyle: oauth2.AuthStyleInHeader, Timeout: 5 * time.Second},
					auth.ManagerOptions{RefreshBefore: time.Second, LockTTL: 6 * time.Second, TokenTimeout: 5 * time.Second}), s
			}
			mA, s := newM()
			mB, _ := newM()
			g := emu.IssueGrant("acme")
			if _, err := s.Put(ctx, &store.Tenant{ID: "acme", Status: store.StatusActive, AccessToken: g.AccessToken,
				RefreshToken: g.RefreshToken, AccessExpiresAt: time.Now().Add(-time.Second)}, 0); err != nil {
				t.Fatal(err)
			}
			if n, err := raw.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
				t.Fatalf("WAIT for the import: %d, %v", n, err)
			}
			key, lockKey := "lsproxy:tenant:{acme}", "lsproxy:lock:tenant:{acme}"
			var snap map[string]string // what the replica has: the pre-mark record
			waitFor(t, 5*time.Second, "the record on the replica", func() bool {
				var err error
				snap, err = rawReplica.HGetAll(ctx, key).Result()
				return err == nil && len(snap) == 3
			})

			replica.Freeze() // replication lag: it sees nothing of A's lock and mark
			aDone := make(chan error, 1)
			go func() { _, err := mA.Token(ctx, "acme"); aDone <- err }()
			var errA error
			aReturned := false
			waitFor(t, 10*time.Second, "A to send or give up", func() bool {
				select {
				case errA = <-aDone:
					aReturned = true
					return true
				default:
					return emu.Stats().RefreshGrants >= 1
				}
			})
			t.Logf("A: sent=%v returned=%v err=%v", emu.Stats().RefreshGrants >= 1, aReturned, errA)
			emu.SetTokenHold(0)
			emu.SetTokenDelay(3 * time.Second) // B's request is looked at 3 s later

			// Failover: the replica is promoted with what it had. Simulated
			// on the master (the address the managers use): the pre-mark
			// record, no lock.
			raw.HSet(ctx, key, "v", snap["v"], "d", snap["d"], "w", snap["w"])
			raw.Del(ctx, lockKey, "lsproxy:lock:{tenant:acme}") // and where older versions kept it
			replica.Thaw()

			bDone := make(chan error, 1)
			go func() { _, err := mB.Token(ctx, "acme"); bDone <- err }()
			if !aReturned {
				errA = <-aDone
			}
			errB := <-bDone
			rec, _ := s.Get(ctx, "acme")
			st := emu.Stats()
			t.Logf("A err=%v; B err=%v", errA, errB)
			t.Logf("emulator: grants=%d reuse=%d active grants=%d; stored status=%s v=%d in_flight=%v",
				st.RefreshGrants, st.ReuseDetected, emu.ActiveGrants("acme"), rec.Status, rec.Version, rec.RefreshInFlight)
			if got := st.ReuseDetected != 0; got != tc.wantReuse {
				t.Errorf("reuse detected = %d, want reuse %v", st.ReuseDetected, tc.wantReuse)
			}
			if !tc.wantReuse && (errB != nil || rec.Status != store.StatusActive || rec.RefreshToken == g.RefreshToken || st.RefreshGrants != 1) {
				t.Errorf("B should have refreshed once and stored it: err=%v status=%s grants=%d", errB, rec.Status, st.RefreshGrants)
			}
			if tc.wantReuse && rec.RefreshMark == "" && rec.Status == store.StatusActive && rec.RefreshToken != g.RefreshToken && errB != nil {
				t.Errorf("A's stale write landed over B's mark (ABA)")
			}
		})
	}
}
