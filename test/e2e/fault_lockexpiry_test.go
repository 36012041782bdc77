package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
)

// TestFaultRedisOutageBeyondLockTTL: Redis stays down longer than the
// refresh lock's remaining TTL while a holder waits to write a refresh
// result that Lightspeed already granted. The holder cannot renew the lock
// (Redis is down), so the lock has expired when Redis comes back while the
// holder still retries its write. Competing replicas take the lock, see the
// in-flight mark, and must NOT send the old refresh token before the
// holder's write window (marked at + lock TTL + 5 s + 2 s skew) has passed:
// the holder's write lands, nobody reuses a token, nothing is flagged.
// (Before the window rule this burned the grant in 5 runs of 5.)
func TestFaultRedisOutageBeyondLockTTL(t *testing.T) {
	const victim = "victim"
	rdb := testredis.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	d := newDeployment(t, "redis-outage-beyond-lock-ttl", emulator.Config{AccessTTL: time.Minute}, 4,
		"LSPROXY_REDIS_URL", rdb.URL(), "LSPROXY_REFRESH_BEFORE", "5s",
		"LSPROXY_TOKEN_TIMEOUT", "2s", "LSPROXY_LOCK_TTL", "3250ms") // the cover of a 2 s token request (rule 17)
	a, b := d.procs[0], d.procs[1]
	others := d.procs[1:] // competitors for the lock once Redis is back
	d.importTenants(b, 1, victim)

	d.emu.SetTokenHold(time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = a.get(ctx, victim, faultPath) // A refreshes; its answer is held 1 s
	}()
	if !eventually(5*time.Second, func() bool { return d.emu.RefreshCount(victim) == 1 }) {
		t.Fatal("A's refresh was not granted")
	}
	rdb.Kill()
	killAt := time.Now()
	d.emu.SetTokenHold(0)
	load := startLoad(6, func(c, _ int) (*proc, string, bool) { return others[c%len(others)], victim, true }, policy{
		may503: func(string, time.Time) bool { return true }, // Redis is down
	})
	time.Sleep(3700*time.Millisecond - time.Since(killAt)) // the lock expires meanwhile
	rdb.Restart()
	time.Sleep(4 * time.Second)
	elapsed := load.Stop()
	<-done

	f := &figures{}
	f.note("duration", elapsed)
	d.conclude(b, []string{victim}, load.tally, expectations{minRefreshes: 1}, f)
	d.termAll()
}
