package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
)

// lockWatch samples tenants' lock keys in Redis: how long each lock (one
// owner token) lived and whether its TTL was pushed back while held (the
// holder's lease renewal).
type lockWatch struct {
	mu       sync.Mutex
	seen     map[string]*lockLife // by owner token
	maxLife  time.Duration
	renewals int
	stop     chan struct{}
	done     chan struct{}
}

type lockLife struct {
	first, last time.Time
	lastPTTL    time.Duration
}

func watchLocks(client *redis.Client, tenants []string, every time.Duration) *lockWatch {
	w := &lockWatch{seen: map[string]*lockLife{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			pipe := client.Pipeline()
			gets := make([]*redis.StringCmd, len(tenants))
			ttls := make([]*redis.DurationCmd, len(tenants))
			for i, id := range tenants {
				key := "lsproxy:lock:{tenant:" + id + "}"
				gets[i] = pipe.Get(ctx, key)
				ttls[i] = pipe.PTTL(ctx, key)
			}
			_, _ = pipe.Exec(ctx)
			cancel()
			now := time.Now()
			w.mu.Lock()
			for i := range tenants {
				owner, err := gets[i].Result()
				if err != nil || owner == "" {
					continue
				}
				pttl := ttls[i].Val()
				l := w.seen[owner]
				if l == nil {
					l = &lockLife{first: now}
					w.seen[owner] = l
				} else if pttl > l.lastPTTL+100*time.Millisecond {
					w.renewals++
				}
				l.last, l.lastPTTL = now, pttl
				if d := l.last.Sub(l.first); d > w.maxLife {
					w.maxLife = d
				}
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *lockWatch) Stop() (locks, renewals int, maxLife time.Duration) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen), w.renewals, w.maxLife
}

// TestFaultSlowTokenEndpoint: the token endpoint takes 1.4 s per request
// (70 % of the 2 s token timeout: slow, yet clear of the timeout, whose
// lost answer would be a different scenario) and the lock TTL is the
// shortest the configuration accepts (3.25 s: the token timeout plus the
// write retry and the renewal before the send, SPEC §3 rule 17), while six tenants with 4 s tokens are refreshed
// all the time by three replicas. Holders keep their lease by renewing it;
// waiters wait; nobody presents a refresh token twice and nobody is
// flagged.
func TestFaultSlowTokenEndpoint(t *testing.T) {
	const tenants, clients, duration = 6, 12, 12 * time.Second
	rdb := testredis.Start(t)
	d := newDeployment(t, "slow-token-endpoint", emulator.Config{AccessTTL: 4 * time.Second}, 3,
		"LSPROXY_REDIS_URL", rdb.URL(), "LSPROXY_REFRESH_BEFORE", "2s",
		"LSPROXY_TOKEN_TIMEOUT", "2s", "LSPROXY_LOCK_TTL", "3250ms")
	ids := tenantIDs("slow", tenants)
	d.importTenants(d.procs[0], 0, ids...)
	d.emu.SetTokenDelay(1400 * time.Millisecond)

	watch := watchLocks(rdb.Client(), ids, 50*time.Millisecond)
	load := startLoad(clients, spread(d.procs, ids), policy{})
	time.Sleep(duration) // the load runs meanwhile
	elapsed := load.Stop()
	locks, renewals, maxLife := watch.Stop()
	d.emu.SetTokenDelay(0)

	f := &figures{}
	f.note("duration", elapsed)
	f.note("token_delay", "1.4s")
	f.note("lock_ttl", "3.25s")
	f.note("locks_seen", locks)
	f.note("lease_renewals_seen", renewals)
	f.note("longest_lock", maxLife)
	d.conclude(d.procs[0], ids, load.tally, expectations{minRefreshes: tenants * 2}, f)
	if renewals == 0 {
		t.Errorf("no lease renewal observed in %d locks", locks)
	}
	d.termAll()
}
