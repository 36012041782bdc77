package auth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
	"github.com/lsproxy/lsproxy/store"
)

// TestReplicasShareOneRedis runs three token managers, each with its own
// Redis connection, against one real redis-server and the strict emulator
// (single-use refresh tokens with reuse detection, 3 s access tokens), with
// 48 concurrent clients. Invariants: no refresh-token reuse, no rejected
// refresh, every API answer belongs to the tenant asked for, no error.
func TestReplicasShareOneRedis(t *testing.T) {
	duration := 8 * time.Second
	if testing.Short() {
		duration = 3 * time.Second
	}
	r := runReplicas(t, duration, nil)
	if r.reuse != 0 || r.rejected != 0 || r.failures != 0 || r.crossTenant != 0 {
		t.Fatalf("invariant broken")
	}
	if r.refreshes < 20 {
		t.Fatalf("only %d refreshes: the test did not exercise expiry", r.refreshes)
	}
}

// TestReplicasWithoutLockOrFenceBurnTokens proves the test above can fail:
// with the store lock disabled and writes unfenced (compare-and-set
// ignored), replicas race and the emulator detects reuse.
func TestReplicasWithoutLockOrFenceBurnTokens(t *testing.T) {
	r := runReplicas(t, 4*time.Second, func(s store.Store) store.Store { return blind{noLock{s}} })
	if r.reuse == 0 && r.rejected == 0 {
		t.Fatalf("no reuse detected without lock and fence: the replica test would not catch a broken protocol")
	}
}

// TestReplicasWithoutLockStillSafe: the in-flight mark, written with
// compare-and-set before a refresh is sent, fences replicas even without
// the lock (defence in depth).
func TestReplicasWithoutLockStillSafe(t *testing.T) {
	r := runReplicas(t, 4*time.Second, func(s store.Store) store.Store { return noLock{s} })
	if r.reuse != 0 || r.rejected != 0 || r.crossTenant != 0 {
		t.Fatalf("reuse=%d rejected=%d without the lock", r.reuse, r.rejected)
	}
}

// blind is a store whose Put ignores the expected version and whose Get
// hides the in-flight mark: no fence at all.
type blind struct{ store.Store }

func (b blind) Get(ctx context.Context, id string) (*store.Tenant, error) {
	t, err := b.Store.Get(ctx, id)
	if t != nil {
		t.RefreshInFlight, t.RefreshStartedAt = false, time.Time{}
	}
	return t, err
}

func (b blind) Put(ctx context.Context, t *store.Tenant, _ int64) (int64, error) {
	var expect int64
	if cur, err := b.Store.Get(ctx, t.ID); err == nil { // the real Get: its version
		expect = cur.Version
	}
	return b.Store.Put(ctx, t, expect)
}

// noLock is a store whose lock is always granted.
type noLock struct{ store.Store }

func (noLock) TryLock(context.Context, string, time.Duration) (store.Lock, error) {
	return nopLock{}, nil
}

type nopLock struct{}

func (nopLock) Refresh(context.Context, time.Duration) error { return nil }
func (nopLock) Release(context.Context) error                { return nil }

type replicaResult struct {
	requests, refreshes, reuse, rejected, failures, crossTenant int64
}

func runReplicas(t *testing.T, duration time.Duration, wrap func(store.Store) store.Store) replicaResult {
	const (
		replicas = 3
		tenants  = 20
		clients  = 48
	)
	emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeries, AccessTTL: 3 * time.Second})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	rs := testredis.Start(t)
	keys, err := store.NewKeyring([]byte(strings.Repeat("r", 32)))
	if err != nil {
		t.Fatal(err)
	}

	managers := make([]*auth.Manager, replicas)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range managers {
		client, err := store.DialRedis(ctx, store.RedisConfig{URL: rs.URL()})
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		var s store.Store = store.NewRedis(client, store.RedisOptions{Keys: keys})
		if wrap != nil {
			s = wrap(s)
		}
		cfg := emu.Config()
		managers[i] = auth.NewManager(s, &auth.OAuthClient{
			ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
			TokenURL: srv.URL + emu.Paths().Token, AuthStyle: oauth2.AuthStyleInHeader, Timeout: 5 * time.Second,
		}, auth.ManagerOptions{RefreshBefore: time.Second, LockTTL: 15 * time.Second})
		go managers[i].Run(ctx)
		if i == 0 {
			for n := 0; n < tenants; n++ {
				id := fmt.Sprintf("tenant-%02d", n)
				g := emu.IssueGrant(id)
				_, err := s.Put(ctx, &store.Tenant{ID: id, Status: store.StatusActive, AccessToken: g.AccessToken,
					RefreshToken: g.RefreshToken, AccessExpiresAt: time.Now().Add(time.Duration(g.ExpiresIn) * time.Second)}, 0)
				if err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	var requests, failures, crossTenant atomic.Int64
	var firstErr sync.Once
	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			m := managers[c%replicas]
			for i := 0; time.Now().Before(deadline); i++ {
				id := fmt.Sprintf("tenant-%02d", (c*7+i)%tenants)
				requests.Add(1)
				tok, err := m.Token(ctx, id)
				if err != nil {
					failures.Add(1)
					if wrap == nil {
						firstErr.Do(func() { t.Errorf("token for %s: %v", id, err) })
					}
					continue
				}
				req, _ := http.NewRequest("GET", srv.URL+"/f/data/businesses", nil)
				req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					failures.Add(1)
					continue
				}
				var body struct{ Tenant string }
				json.NewDecoder(resp.Body).Decode(&body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failures.Add(1)
					if wrap == nil {
						firstErr.Do(func() { t.Errorf("API answered %d for %s", resp.StatusCode, id) })
					}
				} else if body.Tenant != id {
					crossTenant.Add(1)
				}
			}
		}(c)
	}
	wg.Wait()
	st := emu.Stats()
	t.Logf("replicas=%d tenants=%d clients=%d duration=%s: requests=%d refreshes=%d reuse=%d rejected=%d failures=%d cross-tenant=%d",
		replicas, tenants, clients, duration, requests.Load(), st.RefreshGrants, st.ReuseDetected, st.RefreshRejected, failures.Load(), crossTenant.Load())
	return replicaResult{requests.Load(), st.RefreshGrants, st.ReuseDetected, st.RefreshRejected, failures.Load(), crossTenant.Load()}
}
