package e2e

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
)

// sentinelSetup starts a master, one replica (linked) and one Sentinel
// with down-after 1 s, and returns a function naming the current master.
func sentinelSetup(t *testing.T) (master, replica, sen *testredis.Server, masterAddr func() string) {
	t.Helper()
	master = testredis.Start(t)
	replica = testredis.Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port()))
	ctx := context.Background()
	if !eventually(10*time.Second, func() bool {
		info, _ := replica.Client().Info(ctx, "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	}) {
		t.Fatal("the replica did not connect to the master")
	}
	sen = testredis.StartSentinel(t, "mymaster", master)
	sc := sen.Client()
	for _, kv := range [][2]string{{"down-after-milliseconds", "1000"}, {"failover-timeout", "10000"}} {
		if err := sc.Do(ctx, "SENTINEL", "SET", "mymaster", kv[0], kv[1]).Err(); err != nil {
			t.Fatalf("SENTINEL SET %s: %v", kv[0], err)
		}
	}
	if !eventually(15*time.Second, func() bool {
		r, _ := sc.Do(ctx, "SENTINEL", "REPLICAS", "mymaster").Slice()
		return len(r) == 1
	}) {
		t.Fatal("the sentinel did not discover the replica")
	}
	masterAddr = func() string {
		r, err := sc.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster").StringSlice()
		if err != nil || len(r) != 2 {
			return ""
		}
		return r[0] + ":" + r[1]
	}
	return master, replica, sen, masterAddr
}

// TestFaultFailoverReplicationLag: asynchronous replication loses what the
// master had not yet passed on. The replica is frozen (SIGSTOP) while
// replica A takes the victim's lock and writes its in-flight mark on the
// master; then the master is SIGKILLed, the replica continues and Sentinel
// promotes it — without the lock and the mark. Had A sent the refresh
// token, B or C would now send it again (reuse: the grant revoked). SPEC §3
// rule 14: before a refresh token leaves, lock and mark must be
// acknowledged by a replica (WAIT); with the replica frozen that times out,
// nothing is sent and A answers 503 token_unavailable. After the
// promotion the victim is refreshed once, through the new master, and
// served; no refresh token is ever presented twice.
func TestFaultFailoverReplicationLag(t *testing.T) {
	const victim = "lagged"
	master, replica, sen, masterAddr := sentinelSetup(t)
	d := newDeployment(t, "failover-replication-lag", emulator.Config{AccessTTL: 10 * time.Minute}, 3,
		"LSPROXY_REDIS_SENTINEL_MASTER", "mymaster", "LSPROXY_REDIS_SENTINEL_ADDRS", sen.Addr,
		"LSPROXY_REFRESH_BEFORE", "5s")
	a, b := d.procs[0], d.procs[1]
	others := tenantIDs("steady", 6)
	ids := append(append([]string{}, others...), victim)
	d.importTenants(b, 0, others...)
	d.importTenants(b, 1, victim) // expired: the next request refreshes
	d.before = d.emu.Stats()
	for _, p := range d.procs {
		for _, id := range others {
			p.expectServes(t, id) // cached: served through the failover
		}
	}
	// Everything written so far has reached the replica.
	ctx := context.Background()
	if n, err := master.Client().Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT on the master before the fault: %d replicas, %v", n, err)
	}

	var (
		mu               sync.Mutex
		triggered, moved bool
	)
	survivors := d.procs[1:]
	load := startLoad(6, func(c, _ int) (*proc, string, bool) {
		mu.Lock()
		mv := moved
		mu.Unlock()
		p := survivors[rand.IntN(len(survivors))]
		if mv && c%2 == 0 {
			return p, victim, true
		}
		return p, others[rand.IntN(len(others))], true
	}, policy{may503: func(tenant string, _ time.Time) bool {
		mu.Lock()
		defer mu.Unlock()
		return tenant == victim && triggered
	}})

	replica.Freeze()
	frozenAt := time.Now()
	// Were A to send the refresh, Lightspeed would grant it and hold the
	// answer past the failover.
	d.emu.SetTokenHold(15 * time.Second)
	mu.Lock()
	triggered = true
	mu.Unlock()
	trigger := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, _ := a.get(ctx, victim, faultPath)
		trigger <- r
	}()
	var first result
	answered := eventually(20*time.Second, func() bool {
		select {
		case first = <-trigger:
			return true
		default:
			return d.emu.RefreshCount(victim) > 0 // sent without an acknowledgement
		}
	})
	lockOnMaster := lockOwner(master, victim) != ""
	sentUnacked := d.emu.Stats().TokenRequests - d.before.TokenRequests
	if !answered {
		t.Errorf("A neither answered nor sent a refresh within 20 s of the replica's freeze")
	}
	if answered && first.Status != 0 && first.Status != http.StatusServiceUnavailable {
		t.Errorf("A answered the victim's request %d %s while no replica acknowledged, want 503 token_unavailable", first.Status, first.Body)
	}
	if sentUnacked != 0 {
		t.Errorf("%d token requests sent while no replica acknowledged the lock and the mark (SPEC §3 rule 14)", sentUnacked)
	}

	master.Kill()
	killAt := time.Now()
	replica.Thaw()
	frozenFor := time.Since(frozenAt)
	if !eventually(25*time.Second, func() bool { return masterAddr() == replica.Addr }) {
		t.Fatalf("no failover to %s within 25 s (sentinel says %q)", replica.Addr, masterAddr())
	}
	switchedAt := time.Now()
	d.emu.SetTokenHold(0)
	mu.Lock()
	moved = true
	mu.Unlock()
	// Bounded by the store's 30 s re-read of the replica count (until then a
	// refresh waits for a replica the new master does not have) plus margin.
	if !eventually(45*time.Second, func() bool { _, ok := load.firstOK(victim); return ok }) {
		t.Errorf("the victim was not served within 45 s of the promotion")
	}
	servedAt, _ := load.firstOK(victim)
	time.Sleep(2 * time.Second) // the load runs on the new master
	elapsed := load.Stop()

	f := &figures{}
	f.note("duration", elapsed)
	f.note("replica_frozen", frozenFor)
	f.note("lock_on_master_unacked", lockOnMaster)
	f.note("token_requests_while_unacked", sentUnacked)
	f.note("first_answer_while_unacked", first.Status)
	f.note("failover_after_kill", switchedAt.Sub(killAt))
	if !servedAt.IsZero() {
		f.note("victim_served_after_promotion", servedAt.Sub(switchedAt))
	}
	d.conclude(b, ids, load.tally, expectations{minRefreshes: 1}, f)
	if n := d.emu.RefreshCount(victim); n != 1 {
		t.Errorf("victim: %d refreshes, want 1 (through the new master)", n)
	}
	d.termAll()
}
