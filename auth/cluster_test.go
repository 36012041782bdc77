package auth_test

import (
	"context"
	"fmt"
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

// TestReplicasOnRedisClusterWithFailover runs three token managers, each
// with its own cluster client, against a Redis Cluster of three masters
// with a replica each, and the strict emulator (single-use refresh tokens
// with reuse detection, 2 s access tokens). Halfway, one master is killed
// and its replica takes over. Invariants: no refresh-token reuse, no
// rejected refresh, no tenant flagged; tokens are served again after the
// failover. Errors while the slots move are expected (503s), not counted.
func TestReplicasOnRedisClusterWithFailover(t *testing.T) {
	const (
		replicas = 3
		tenants  = 24
		clients  = 24
		phase    = 4 * time.Second
	)
	cl := testredis.StartCluster(t, 3)
	emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeries, AccessTTL: 2 * time.Second})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	keys, err := store.NewKeyring([]byte(strings.Repeat("c", 32)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var flagged atomic.Int64
	managers := make([]*auth.Manager, replicas)
	stores := make([]*store.Redis, replicas)
	for i := range managers {
		client, err := store.DialRedis(ctx, store.RedisConfig{ClusterAddrs: cl.Addrs()})
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = store.NewRedis(client, store.RedisOptions{Keys: keys})
		defer stores[i].Close()
		cfg := emu.Config()
		managers[i] = auth.NewManager(stores[i], &auth.OAuthClient{
			ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
			TokenURL: srv.URL + emu.Paths().Token, AuthStyle: oauth2.AuthStyleInHeader, Timeout: 5 * time.Second,
		}, auth.ManagerOptions{RefreshBefore: time.Second, LockTTL: 10 * time.Second,
			OnFlag: func(string, string) { flagged.Add(1) }})
		go managers[i].Run(ctx)
	}
	ids := make([]string, tenants)
	for n := range ids {
		ids[n] = fmt.Sprintf("ct-%02d", n)
		g := emu.IssueGrant(ids[n])
		_, err := stores[0].Put(ctx, &store.Tenant{ID: ids[n], Status: store.StatusActive, AccessToken: g.AccessToken,
			RefreshToken: g.RefreshToken, AccessExpiresAt: time.Now().Add(time.Duration(g.ExpiresIn) * time.Second)}, 0)
		if err != nil {
			t.Fatal(err)
		}
	}

	var ok, failed [2]atomic.Int64 // per phase: before, after the failover
	var phaseIdx atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			m := managers[c%replicas]
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p := phaseIdx.Load()
				rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := m.Token(rctx, ids[(c*5+i)%tenants])
				rcancel()
				if err != nil {
					failed[p].Add(1)
					time.Sleep(10 * time.Millisecond) // as a client would back off after a 503
					continue
				}
				ok[p].Add(1)
			}
		}(c)
	}
	time.Sleep(phase) // load runs; the test's only clock
	refreshesBefore := emu.Stats().RefreshGrants
	cl.FailOver(t, 1)
	phaseIdx.Store(1)
	time.Sleep(phase)
	close(stop)
	wg.Wait()

	// Every tenant is readable and active after the failover.
	for _, id := range ids {
		var rec *store.Tenant
		var err error
		for try := 0; try < 50; try++ {
			if rec, err = stores[2].Get(ctx, id); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond) // the slot map settles
		}
		if err != nil {
			t.Fatalf("tenant %s after failover: %v", id, err)
		}
		if rec.Status != store.StatusActive {
			t.Errorf("tenant %s %s: %s", id, rec.Status, rec.Reason)
		}
	}
	st := emu.Stats()
	t.Logf("before failover: %d tokens, %d errors, %d refreshes; after: %d tokens, %d errors; refreshes total %d, reuse %d, rejected %d, flagged %d",
		ok[0].Load(), failed[0].Load(), refreshesBefore, ok[1].Load(), failed[1].Load(), st.RefreshGrants, st.ReuseDetected, st.RefreshRejected, flagged.Load())
	if st.ReuseDetected != 0 || st.RefreshRejected != 0 || flagged.Load() != 0 {
		t.Fatalf("reuse=%d rejected=%d flagged=%d", st.ReuseDetected, st.RefreshRejected, flagged.Load())
	}
	if refreshesBefore < tenants || ok[1].Load() == 0 || st.RefreshGrants <= refreshesBefore {
		t.Fatalf("the test did not exercise refreshes on both sides of the failover")
	}
}
