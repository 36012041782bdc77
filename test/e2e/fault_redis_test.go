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

// TestFaultRedisRestart: Redis (AOF, fsync always) is SIGKILLed while
// three refreshes are between Lightspeed's grant and lsproxy's write, and
// comes back 3 s later. Tenants with cached valid tokens get 200
// throughout; /readyz answers 503 during the outage; tenants that need
// the store answer 503 token_unavailable; the held refresh results are
// written once Redis is back (not lost, not repeated) and refreshes
// resume.
func TestFaultRedisRestart(t *testing.T) {
	const outage, bound = 3 * time.Second, 5 * time.Second
	rdb := testredis.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	// The importer exits before the replicas start, so no late change
	// notification drops a token the replicas cached.
	d := newDeployment(t, "redis-restart", emulator.Config{AccessTTL: time.Minute}, 1,
		"LSPROXY_REDIS_URL", rdb.URL(), "LSPROXY_REFRESH_BEFORE", "5s")
	cached, inflight, late := tenantIDs("cached", 6), tenantIDs("inflight", 3), tenantIDs("late", 3)
	ids := append(append(append([]string{}, cached...), inflight...), late...)
	d.importTenants(d.procs[0], 0, cached...)
	d.importTenants(d.procs[0], 1, append(append([]string{}, inflight...), late...)...)
	if code := d.procs[0].Term(30 * time.Second); code != 0 {
		t.Fatalf("importer exited %d", code)
	}
	d.procs = nil
	for i := 0; i < 3; i++ {
		d.procs = append(d.procs, startProxy(t, d.env))
	}
	d.before = d.emu.Stats()
	for _, p := range d.procs {
		for _, id := range cached {
			p.expectServes(t, id) // now in every replica's cache
		}
	}

	var (
		mu                sync.Mutex
		killAt, restartAt time.Time
		outageTenants     = map[string]bool{}
	)
	for _, id := range append(append([]string{}, inflight...), late...) {
		outageTenants[id] = true
	}
	phase := func() (killed, restarted time.Time) {
		mu.Lock()
		defer mu.Unlock()
		return killAt, restartAt
	}
	var lateOn bool
	load := startLoad(9, func(c, _ int) (*proc, string, bool) {
		p := d.procs[rand.IntN(len(d.procs))]
		mu.Lock()
		on := lateOn
		mu.Unlock()
		switch {
		case on && c%3 == 0: // uncached, expired: need the store
			return p, late[rand.IntN(len(late))], true
		case on && c%3 == 1: // being refreshed when Redis died
			return p, inflight[rand.IntN(len(inflight))], true
		}
		return p, cached[rand.IntN(len(cached))], true
	}, policy{
		may503: func(tenant string, at time.Time) bool {
			killed, restarted := phase()
			return outageTenants[tenant] && !killed.IsZero() && !at.Before(killed) &&
				(restarted.IsZero() || at.Before(restarted.Add(bound)))
		},
	})

	// Three refreshes granted by Lightspeed, their answers held 1.5 s.
	d.emu.SetTokenHold(1500 * time.Millisecond)
	type answer struct {
		tenant string
		p      *proc
		r      result
		err    error
		at     time.Time
	}
	answers := make(chan answer, len(inflight))
	for i, id := range inflight {
		p := d.procs[i%len(d.procs)]
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r, err := p.get(ctx, id, faultPath)
			answers <- answer{id, p, r, err, time.Now()}
		}()
	}
	if !eventually(10*time.Second, func() bool {
		for _, id := range inflight {
			if d.emu.RefreshCount(id) != 1 {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the held refreshes were not granted: %+v", d.emu.Stats())
	}
	rdb.Kill()
	mu.Lock()
	killAt = time.Now()
	lateOn = true
	mu.Unlock()
	d.emu.SetTokenHold(0) // the held answers go out now or soon; their writes fail

	var readyDown time.Duration
	if !eventually(10*time.Second, func() bool { return allReady(d.procs, http.StatusServiceUnavailable) }) {
		t.Errorf("/readyz not 503 on every replica with Redis down")
	} else {
		readyDown = time.Since(killAt)
	}
	time.Sleep(outage - time.Since(killAt)) // the load runs against the dead store
	rdb.Restart()
	mu.Lock()
	restartAt = time.Now()
	mu.Unlock()
	var readyUp time.Duration
	if !eventually(10*time.Second, func() bool { return allReady(d.procs, http.StatusOK) }) {
		t.Errorf("/readyz not 200 on every replica after Redis came back")
	} else {
		readyUp = time.Since(restartAt)
	}
	var heldServed time.Duration // after the restart, the held refreshes' requests answered
	for range inflight {
		a := <-answers
		heldServed = max(heldServed, a.at.Sub(restartAt))
		load.record(load.pol, a.p, a.tenant, a.r, a.err) // waited through the outage: must be 200
		if a.err != nil || a.r.Status != http.StatusOK {
			t.Errorf("the request that started %s's refresh: %v %d %s", a.tenant, a.err, a.r.Status, a.r.Body)
		}
	}
	time.Sleep(bound) // the load runs after the restart
	elapsed := load.Stop()

	f := &figures{}
	f.note("duration", elapsed)
	f.note("outage", restartAt.Sub(killAt))
	f.note("readyz_503_after", readyDown)
	f.note("readyz_200_after_restart", readyUp)
	f.note("held_refreshes_stored_after_restart", heldServed)
	d.conclude(d.procs[0], ids, load.tally, expectations{minRefreshes: int64(len(inflight) + len(late))}, f)
	if load.exp503.Load() == 0 {
		t.Error("no 503 token_unavailable for the tenants that needed the store during the outage")
	}
	for _, id := range inflight {
		if n := d.emu.RefreshCount(id); n != 1 {
			t.Errorf("%s: %d refreshes; the held one should have been stored and used", id, n)
		}
	}
	for _, id := range late {
		if n := d.emu.RefreshCount(id); n != 1 {
			t.Errorf("%s: %d refreshes after the restart, want 1", id, n)
		}
	}
	d.termAll()
}

// TestFaultSentinelFailover: lsproxy reaches Redis through Sentinel
// (master, one replica, one sentinel with down-after 1 s). The master is
// SIGKILLed under load while tenants with 8 s tokens are refreshed
// continuously; Sentinel promotes the replica and traffic continues.
// Tenants whose tokens had to be refreshed during the switch may answer
// 503 token_unavailable until shortly after it; nothing else fails, no
// refresh token is reused, every tenant ends active.
func TestFaultSentinelFailover(t *testing.T) {
	const bound = 5 * time.Second
	master := testredis.Start(t)
	replica := testredis.Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port()))
	ctx := context.Background()
	if !eventually(10*time.Second, func() bool {
		info, _ := replica.Client().Info(ctx, "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	}) {
		t.Fatal("the replica did not connect to the master")
	}
	sen := testredis.StartSentinel(t, "mymaster", master)
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
	masterAddr := func() string {
		r, err := sc.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster").StringSlice()
		if err != nil || len(r) != 2 {
			return ""
		}
		return r[0] + ":" + r[1]
	}

	d := newDeployment(t, "sentinel-failover", emulator.Config{AccessTTL: 8 * time.Second}, 3,
		"LSPROXY_REDIS_SENTINEL_MASTER", "mymaster", "LSPROXY_REDIS_SENTINEL_ADDRS", sen.Addr,
		"LSPROXY_REFRESH_BEFORE", "4s")
	if !strings.Contains(d.procs[0].Logs(), `"kind":"redis"`) {
		t.Fatalf("store not opened as redis:\n%s", d.procs[0].Logs())
	}
	ids := tenantIDs("sentinel", 8)
	d.importTenants(d.procs[0], 0, ids...)

	var (
		mu                 sync.Mutex
		killAt, switchedAt time.Time
	)
	load := startLoad(9, spread(d.procs, ids), policy{
		may503: func(_ string, at time.Time) bool {
			mu.Lock()
			defer mu.Unlock()
			return !killAt.IsZero() && !at.Before(killAt) && (switchedAt.IsZero() || at.Before(switchedAt.Add(bound)))
		},
	})
	time.Sleep(4500 * time.Millisecond) // tokens refreshed at least once through the master
	master.Kill()
	mu.Lock()
	killAt = time.Now()
	mu.Unlock()
	if !eventually(20*time.Second, func() bool { return masterAddr() == replica.Addr }) {
		t.Fatalf("no failover to %s within 20 s (sentinel says %q)", replica.Addr, masterAddr())
	}
	mu.Lock()
	switchedAt = time.Now()
	mu.Unlock()
	atSwitch := map[string]int{}
	for _, id := range ids {
		atSwitch[id] = d.emu.RefreshCount(id)
	}
	time.Sleep(bound + time.Second) // the load runs on the new master
	elapsed := load.Stop()

	f := &figures{}
	f.note("duration", elapsed)
	f.note("failover_after_kill", switchedAt.Sub(killAt))
	d.conclude(d.procs[1], ids, load.tally, expectations{minRefreshes: int64(len(ids)) * 2}, f)
	// Every tenant was refreshed again, through the new master.
	for _, id := range ids {
		if d.emu.RefreshCount(id) <= atSwitch[id] {
			t.Errorf("%s not refreshed after the failover", id)
		}
		if n, _ := replica.Client().Exists(ctx, "lsproxy:tenant:{"+id+"}").Result(); n != 1 {
			t.Errorf("%s: no record on the new master", id)
		}
	}
	d.termAll()
}
