package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lsproxy/lsproxy/internal/testredis"
)

var prefixSeq atomic.Int64

func uniquePrefix() string { return fmt.Sprintf("t%d:", prefixSeq.Add(1)) }

type redisHarness struct {
	newClient func() redis.UniversalClient
	prefix    string

	mu   sync.Mutex
	keys *Keyring // of the last Open, for Peer
}

func (h *redisHarness) Open(t *testing.T, keys *Keyring) Store {
	t.Helper()
	h.mu.Lock()
	h.keys = keys
	h.mu.Unlock()
	r := NewRedis(h.newClient(), RedisOptions{Prefix: h.prefix, Keys: keys})
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func (h *redisHarness) Peer(t *testing.T, _ Store) Store {
	h.mu.Lock()
	keys := h.keys
	h.mu.Unlock()
	return h.Open(t, keys)
}

func (h *redisHarness) Raw(t *testing.T) []byte {
	t.Helper()
	c := h.newClient()
	defer c.Close()
	return dumpRedis(t, c, h.prefix)
}

// dumpRedis returns the names and values of all keys under prefix.
func dumpRedis(t *testing.T, c redis.UniversalClient, prefix string) []byte {
	t.Helper()
	ctx := testCtx(t)
	var mu sync.Mutex
	var entries []string
	dumpNode := func(ctx context.Context, c redis.UniversalClient) error {
		iter := c.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			key := iter.Val()
			var vals []string
			switch typ := c.Type(ctx, key).Val(); typ {
			case "string":
				vals = []string{c.Get(ctx, key).Val()}
			case "hash":
				h := c.HGetAll(ctx, key).Val()
				fields := make([]string, 0, len(h))
				for f := range h {
					fields = append(fields, f)
				}
				sort.Strings(fields) // map order is random: keep dumps comparable
				for _, f := range fields {
					vals = append(vals, f, h[f])
				}
			case "set":
				vals = c.SMembers(ctx, key).Val()
			default:
				return fmt.Errorf("key %s of unexpected type %q", key, typ)
			}
			mu.Lock()
			entries = append(entries, key+"\n"+strings.Join(vals, "\n")+"\n")
			mu.Unlock()
		}
		return iter.Err()
	}
	var err error
	if cc, ok := c.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return dumpNode(ctx, n) })
	} else {
		err = dumpNode(ctx, c)
	}
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(entries) // SCAN order is not stable either
	return []byte(strings.Join(entries, ""))
}

func TestRedisConformance(t *testing.T) {
	srv := testredis.Start(t)
	runConformance(t, func(t *testing.T) harness {
		return &redisHarness{
			prefix:    uniquePrefix(),
			newClient: func() redis.UniversalClient { return redis.NewClient(&redis.Options{Addr: srv.Addr}) },
		}
	})
}

// startCluster runs a one-node Redis Cluster owning every slot: enough to
// make Redis reject commands and scripts whose keys span slots.
func startCluster(t *testing.T) *testredis.Server {
	t.Helper()
	srv := testredis.Start(t, "--cluster-enabled", "yes")
	ctx := testCtx(t)
	c := srv.Client()
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitMax)
	for {
		info, err := c.ClusterInfo(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(info, "cluster_state:ok") {
			return srv
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok after %v:\n%s", waitMax, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRedisClusterConformance(t *testing.T) {
	t.Parallel()
	srv := startCluster(t)
	runConformance(t, func(t *testing.T) harness {
		return &redisHarness{
			prefix: uniquePrefix(),
			newClient: func() redis.UniversalClient {
				return redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr}})
			},
		}
	})
}

func newTestRedis(t *testing.T, srv *testredis.Server, prefix string) *Redis {
	t.Helper()
	r := NewRedis(redis.NewClient(&redis.Options{Addr: srv.Addr}), RedisOptions{Prefix: prefix, Keys: mustKeyring(t, testKeys(t, 1)...)})
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// TestRedisLayout pins the key names other tools (and operators) rely on.
func TestRedisLayout(t *testing.T) {
	srv := testredis.Start(t)
	ctx := testCtx(t)
	c := srv.Client()
	r := newTestRedis(t, srv, "")

	ps := c.Subscribe(ctx, "lsproxy:changes")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Put(ctx, fullTenant("shop"), 0); err != nil {
		t.Fatal(err)
	}
	msg, err := ps.ReceiveMessage(ctx)
	if err != nil || msg.Payload != "shop" {
		t.Fatalf("message on lsproxy:changes = %v, %v", msg, err)
	}
	h, err := c.HGetAll(ctx, "lsproxy:tenant:{shop}").Result()
	if err != nil {
		t.Fatal(err)
	}
	if h["v"] != "1" || !strings.HasPrefix(h["d"], "{") || h["w"] != storedWriteID([]byte(h["d"])) || len(h) != 3 {
		t.Fatalf("tenant hash = %v", h)
	}
	shardSet := fmt.Sprintf("lsproxy:tenants:{ix%d}", indexShard("shop"))
	if ok, _ := c.SIsMember(ctx, shardSet, "shop").Result(); !ok {
		t.Fatalf("id not in %s", shardSet)
	}
	if _, err := r.TryLock(ctx, "shop", time.Minute); err != nil {
		t.Fatal(err)
	}
	if ttl := c.PTTL(ctx, "lsproxy:lock:{shop}").Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("lock key ttl %v", ttl)
	}
	if err := r.PutOnce(ctx, "state", []byte("x"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := c.Get(ctx, "lsproxy:once:{state}").Val(); got != "x" {
		t.Fatalf("once key = %q", got)
	}
	if ttl := c.PTTL(ctx, "lsproxy:once:{state}").Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("once key ttl %v", ttl)
	}
	keys := c.Keys(ctx, "*").Val()
	sort.Strings(keys)
	flaggedSet := fmt.Sprintf("lsproxy:flagged:{ix%d}", indexShard("shop")) // fullTenant is flagged
	want := []string{flaggedSet, "lsproxy:lock:{shop}", "lsproxy:once:{state}", "lsproxy:tenant:{shop}", shardSet}
	if strings.Join(keys, " ") != strings.Join(want, " ") {
		t.Fatalf("keys = %v, want %v", keys, want)
	}
	if err := r.Delete(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.SIsMember(ctx, shardSet, "shop").Result(); ok {
		t.Fatalf("deleted id still in %s", shardSet)
	}
}

func TestRedisListSkipsIndexedButMissing(t *testing.T) {
	srv := testredis.Start(t)
	ctx := testCtx(t)
	r := newTestRedis(t, srv, "p:")
	if _, err := r.Put(ctx, fullTenant("real"), 0); err != nil {
		t.Fatal(err)
	}
	// As left by a create that crashed between index and record.
	if err := srv.Client().SAdd(ctx, "p:tenants", "ghost").Err(); err != nil {
		t.Fatal(err)
	}
	ids, err := r.List(ctx)
	if err != nil || strings.Join(ids, ",") != "real" {
		t.Fatalf("List = %v, %v; want [real]", ids, err)
	}
}

func TestRedisCASResentScriptIsIdempotent(t *testing.T) {
	srv := testredis.Start(t)
	ctx := testCtx(t)
	c := srv.Client()
	key := []string{"x:tenant:{a}"}
	run := func(expect int64, blob string) []int64 {
		t.Helper()
		res, err := casPutScript.Run(ctx, c, key, expect, blob, "", "w-"+blob).Int64Slice()
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if got := run(0, "blob-1"); got[0] != 1 || got[1] != 1 {
		t.Fatalf("create = %v", got)
	}
	if got := run(0, "blob-1"); got[0] != 1 || got[1] != 1 {
		t.Fatalf("resent create = %v, want success at version 1", got)
	}
	if got := run(0, "blob-other"); got[0] != 0 || got[1] != 1 {
		t.Fatalf("competing create = %v, want conflict at version 1", got)
	}
	if got := run(1, "blob-2"); got[0] != 1 || got[1] != 2 {
		t.Fatalf("update = %v", got)
	}
	if got := run(0, "blob-1"); got[0] != 0 || got[1] != 2 {
		t.Fatalf("stale resend = %v, want conflict at version 2", got)
	}
}

func TestRedisPrefixIsolation(t *testing.T) {
	srv := testredis.Start(t)
	ctx := testCtx(t)
	keys := mustKeyring(t, testKeys(t, 1)...)
	open := func(prefix string) *Redis {
		r := NewRedis(srv.Client(), RedisOptions{Prefix: prefix, Keys: keys})
		return r
	}
	a, b := open("a:"), open("b:")
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	bch, err := b.Subscribe(subCtx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(ctx, fullTenant("only-a"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := a.TryLock(ctx, "l", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := a.PutOnce(ctx, "o", []byte("x"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "only-a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("b sees a's tenant: %v", err)
	}
	if ids, err := b.List(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("b lists %v, %v", ids, err)
	}
	l, err := b.TryLock(ctx, "l", time.Minute)
	if err != nil {
		t.Fatalf("b's lock blocked by a's: %v", err)
	}
	_ = l.Release(ctx)
	if _, err := b.TakeOnce(ctx, "o"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("b takes a's one-time value: %v", err)
	}
	// a's notification went out first; b's subscriber must see only b's.
	if _, err := b.Put(ctx, fullTenant("only-b"), 0); err != nil {
		t.Fatal(err)
	}
	if id := receive(t, bch); id != "only-b" {
		t.Fatalf("b's subscriber got %q", id)
	}
}

func TestRedisSubscribeSurvivesRestart(t *testing.T) {
	t.Parallel()
	srv := testredis.Start(t)
	ctx := testCtx(t)
	writer := newTestRedis(t, srv, "r:")
	reader := newTestRedis(t, srv, "r:")
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := reader.Subscribe(subCtx)
	if err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	srv.Restart() // empty again: nothing is persisted

	// Ids written before the subscription is back are lost (best effort);
	// write until one arrives, bounded.
	deadline := time.Now().Add(15 * time.Second)
	tn := fullTenant("after-restart")
	var version int64
	sawLoss := false
	for {
		if v, err := writer.Put(ctx, tn, version); err == nil {
			version = v
		}
		select {
		case id, ok := <-ch:
			if !ok {
				t.Fatal("subscription closed by the restart")
			}
			if id == "" {
				sawLoss = true // the reconnect is reported as a loss
				continue
			}
			if id != "after-restart" {
				t.Fatalf("got %q", id)
			}
			if !sawLoss {
				t.Fatal("the reconnect was not reported with an empty id")
			}
			cancel()
			waitClosed(t, ch)
			return
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no notification after the restart")
		}
	}
}

func TestRedisServerDown(t *testing.T) {
	srv := testredis.Start(t)
	ctx := testCtx(t)
	// No retries: this is about how failures are reported, not go-redis's
	// retry policy.
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialerRetries: 1})
	r := NewRedis(client, RedisOptions{Keys: mustKeyring(t, testKeys(t, 1)...)})
	defer r.Close()
	if _, err := r.Put(ctx, fullTenant("x"), 0); err != nil {
		t.Fatal(err)
	}
	l, err := r.TryLock(ctx, "x", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	errs := map[string]error{}
	_, errs["Get"] = r.Get(ctx, "x")
	_, errs["Put"] = r.Put(ctx, fullTenant("x"), 1)
	_, errs["List"] = r.List(ctx)
	errs["Delete"] = r.Delete(ctx, "x")
	_, errs["TryLock"] = r.TryLock(ctx, "y", time.Minute)
	errs["Refresh"] = l.Refresh(ctx, time.Minute)
	errs["Release"] = l.Release(ctx)
	errs["PutOnce"] = r.PutOnce(ctx, "x", nil, time.Minute)
	_, errs["TakeOnce"] = r.TakeOnce(ctx, "x")
	_, errs["Subscribe"] = r.Subscribe(ctx)
	errs["Ping"] = r.Ping(ctx)
	for name, err := range errs {
		switch {
		case err == nil:
			t.Errorf("%s with Redis down: no error", name)
		case errors.Is(err, ErrNotFound), errors.Is(err, ErrConflict), errors.Is(err, ErrLockHeld), errors.Is(err, ErrLockLost):
			t.Errorf("%s with Redis down: %v, a sentinel error (would be misread)", name, err)
		case !strings.HasPrefix(err.Error(), "store: redis "):
			t.Errorf("%s: error %q lacks context", name, err)
		}
	}
}

func TestRedisOnErrorHook(t *testing.T) {
	srv := testredis.Start(t)
	ctx := testCtx(t)
	admin := srv.Client()
	// Users that may do everything but one step of Put/Delete.
	for user, deny := range map[string]string{"nopub": "-publish", "nosadd": "-sadd", "nosrem": "-srem"} {
		if err := admin.Do(ctx, "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", deny).Err(); err != nil {
			t.Fatal(err)
		}
	}
	open := func(user string) (*Redis, *[]string) {
		var mu sync.Mutex
		var got []string
		r := NewRedis(redis.NewClient(&redis.Options{Addr: srv.Addr, Username: user, Password: "pw"}), RedisOptions{
			Prefix: user + ":",
			Keys:   mustKeyring(t, testKeys(t, 1)...),
			OnError: func(op string, err error) {
				mu.Lock()
				got = append(got, op)
				mu.Unlock()
			},
		})
		t.Cleanup(func() { _ = r.Close() })
		return r, &got
	}

	r, got := open("nopub")
	if _, err := r.Put(ctx, fullTenant("a"), 0); err != nil {
		t.Fatalf("Put must succeed although PUBLISH fails: %v", err)
	}
	if err := r.Delete(ctx, "a"); err != nil {
		t.Fatalf("Delete must succeed although PUBLISH fails: %v", err)
	}
	if strings.Join(*got, ",") != "publish,publish" {
		t.Fatalf("OnError ops = %v", *got)
	}

	r, _ = open("nosadd")
	if _, err := r.Put(ctx, fullTenant("a"), 0); err == nil || !strings.Contains(err.Error(), "index") {
		t.Fatalf("create without index: %v, want an index error", err)
	}
	if _, err := r.Get(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("failed create wrote the record: %v", err)
	}

	r, got = open("nosrem")
	if _, err := r.Put(ctx, fullTenant("a"), 0); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(ctx, "a"); err != nil {
		t.Fatalf("Delete must succeed although SREM fails: %v", err)
	}
	if strings.Join(*got, ",") != "index" {
		t.Fatalf("OnError ops = %v", *got)
	}
	if ids, err := r.List(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("List after delete with stale index = %v, %v", ids, err)
	}
}

func TestRedisIndexRepairAfterRacingDelete(t *testing.T) {
	srv := testredis.Start(t)
	ctx := testCtx(t)
	r := newTestRedis(t, srv, "i:")
	// Simulate: a Delete's SREM landed after a concurrent create's first
	// SADD and CAS; the create's second SADD restores the id.
	for range 20 {
		if _, err := r.Put(ctx, fullTenant("flap"), 0); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _ = r.Delete(ctx, "flap") }()
		go func() { defer wg.Done(); _, _ = r.Put(ctx, fullTenant("flap"), 0) }()
		wg.Wait()
		_, err := r.Get(ctx, "flap")
		ids, lerr := r.List(ctx)
		if lerr != nil {
			t.Fatal(lerr)
		}
		listed := len(ids) == 1
		if exists := err == nil; exists != listed {
			t.Fatalf("record exists=%v but listed=%v", exists, listed)
		}
		if err == nil {
			if err := r.Delete(ctx, "flap"); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestNewRedisPanics(t *testing.T) {
	for name, fn := range map[string]func(){
		"nil client": func() { NewRedis(nil, RedisOptions{Keys: mustKeyring(t, testKeys(t, 1)...)}) },
		"nil keys":   func() { NewRedis(redis.NewClient(&redis.Options{}), RedisOptions{}) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			fn()
		}()
	}
}

// A write whose change notification cannot be published still succeeds,
// and the failure is reported once, after every attempt.
func TestRedisPublishFailureReported(t *testing.T) {
	srv := testredis.Start(t)
	ctx := testCtx(t)
	admin := srv.Client()
	if err := admin.Do(ctx, "ACL", "SETUSER", "nopub", "on", ">pw", "~*", "&*", "+@all", "-publish").Err(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reports []string
	r := NewRedis(redis.NewClient(&redis.Options{Addr: srv.Addr, Username: "nopub", Password: "pw"}),
		RedisOptions{Keys: mustKeyring(t, testKeys(t, 1)...), OnError: func(op string, err error) {
			mu.Lock()
			defer mu.Unlock()
			reports = append(reports, op+": "+err.Error())
		}})
	t.Cleanup(func() { _ = r.Close() })
	if _, err := r.Put(ctx, fullTenant("shop"), 0); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if _, err := r.Get(ctx, "shop"); err != nil {
		t.Fatalf("the write is not there: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 1 || !strings.HasPrefix(reports[0], "publish: ") || !strings.Contains(reports[0], "3 attempts") {
		t.Fatalf("reports = %q, want one publish failure after 3 attempts", reports)
	}
	// ACL rejections count as rejected_calls of PUBLISH.
	stats := admin.Info(ctx, "commandstats").Val()
	if !strings.Contains(stats, "cmdstat_publish:") || !strings.Contains(stats[strings.Index(stats, "cmdstat_publish:"):], "rejected_calls=3") {
		t.Fatalf("want 3 rejected PUBLISH attempts; commandstats: %s", stats)
	}
}

// A publish that fails counts the lost notification in the store, for
// every process sharing the prefix (NotifyLosses, SPEC §3 rule 21); a
// successful one counts nothing.
func TestRedisCountsLostNotifications(t *testing.T) {
	srv := testredis.Start(t)
	ctx := testCtx(t)
	if err := srv.Client().Do(ctx, "ACL", "SETUSER", "nopub", "on", ">pw", "~*", "&*", "+@all", "-publish").Err(); err != nil {
		t.Fatal(err)
	}
	prefix := uniquePrefix()
	keys := mustKeyring(t, testKeys(t, 1)...)
	open := func(opts *redis.Options) *Redis {
		s := NewRedis(redis.NewClient(opts), RedisOptions{Prefix: prefix, Keys: keys})
		t.Cleanup(func() { s.Close() })
		return s
	}
	reader := open(&redis.Options{Addr: srv.Addr})
	writer := open(&redis.Options{Addr: srv.Addr, Username: "nopub", Password: "pw"})
	if n, err := reader.LostNotifications(ctx); err != nil || n != 0 {
		t.Fatalf("before any write: %d, %v", n, err)
	}
	if _, err := reader.Put(ctx, fullTenant("ok"), 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := reader.LostNotifications(ctx); n != 0 {
		t.Fatalf("a delivered publish counted as lost: %d", n)
	}
	if _, err := writer.Put(ctx, fullTenant("lost"), 0); err != nil {
		t.Fatal(err)
	}
	if n, err := reader.LostNotifications(ctx); err != nil || n != 1 {
		t.Fatalf("after a failed publish: %d, %v, want 1", n, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := reader.LostNotifications(cctx); err == nil {
		t.Error("LostNotifications on a canceled context succeeded")
	}
}
