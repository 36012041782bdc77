package store

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lsproxy/lsproxy/internal/testredis"
)

// A tenant's record, its lock and (inside the record) its in-flight mark
// share one Cluster slot, so they fail over together.
func TestRedisTenantLockSharesRecordSlot(t *testing.T) {
	srv := testredis.Start(t)
	ctx := testCtx(t)
	r := newTestRedis(t, srv, "")
	c := srv.Client()
	for _, id := range []string{"acme", "shop-1", "x:y"} {
		rec := c.ClusterKeySlot(ctx, r.tenantKey(id)).Val()
		lock := c.ClusterKeySlot(ctx, r.lockKey("tenant:"+id)).Val()
		if rec != lock {
			t.Errorf("tenant %q: record in slot %d, lock in slot %d", id, rec, lock)
		}
	}
	if got := r.lockKey("tenant:acme"); got != "lsproxy:lock:tenant:{acme}" {
		t.Errorf("lock key %q", got)
	}
}

// During a rolling upgrade a replica of the earlier version locks a tenant
// under the earlier key; this version must respect it, and take it too.
func TestRedisLockExcludesEarlierVersionKey(t *testing.T) {
	srv := testredis.Start(t)
	ctx := testCtx(t)
	r := newTestRedis(t, srv, "")
	c := srv.Client()
	if err := c.Set(ctx, "lsproxy:lock:{tenant:acme}", "old-replica", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.TryLock(ctx, "tenant:acme", time.Minute); err == nil {
		t.Fatal("lock taken while an earlier version holds it")
	}
	if n := c.Exists(ctx, "lsproxy:lock:tenant:{acme}").Val(); n != 0 {
		t.Fatal("new key left held after the failed attempt")
	}
	c.Del(ctx, "lsproxy:lock:{tenant:acme}")
	l, err := r.TryLock(ctx, "tenant:acme", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.SetNX(ctx, "lsproxy:lock:{tenant:acme}", "old-replica", time.Minute).Result(); ok {
		t.Fatal("an earlier-version replica could take the lock")
	}
	if err := l.Refresh(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := c.Exists(ctx, "lsproxy:lock:{tenant:acme}", "lsproxy:lock:tenant:{acme}").Val(); n != 0 {
		t.Fatalf("%d lock keys left after release", n)
	}
}

// Tenants written by an earlier version (single id set, no due index) are
// listed and found due.
func TestRedisIndexFromEarlierVersion(t *testing.T) {
	srv := testredis.Start(t)
	ctx := testCtx(t)
	r := newTestRedis(t, srv, "old:")
	c := srv.Client()
	rec := fullTenant("legacy")
	rec.Status = StatusActive
	if _, err := r.Put(ctx, rec, 0); err != nil {
		t.Fatal(err)
	}
	// Make it look as an earlier version left it.
	for s := 0; s < IndexShards; s++ {
		c.Del(ctx, r.shardKeys(s)...)
	}
	c.SAdd(ctx, "old:tenants", "legacy")

	ids, err := r.List(ctx)
	if err != nil || len(ids) != 1 || ids[0] != "legacy" {
		t.Fatalf("List = %v, %v", ids, err)
	}
	page, next, err := r.ListPage(ctx, "", 10)
	if err != nil || len(page) != 1 || next != "" {
		t.Fatalf("ListPage = %v %q %v", page, next, err)
	}
	r2 := NewRedis(redis.NewClient(&redis.Options{Addr: srv.Addr}), RedisOptions{Prefix: "old:", Keys: r.keys})
	defer r2.Close()
	due, err := r2.ListDue(ctx, rec.RefreshExpiresAt, time.Time{})
	if err != nil || len(due) != 1 || due[0] != "legacy" {
		t.Fatalf("ListDue = %v, %v", due, err)
	}
	if c.Exists(ctx, "old:index:v2").Val() != 1 {
		t.Fatal("no marker after building the due index")
	}
}

// waitCounted calls CountByStatus until the flagged index is built
// (ErrNotCounted until then), bounded in time.
func waitCounted(t *testing.T, r *Redis) map[Status]int {
	t.Helper()
	ctx := testCtx(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		counts, err := r.CountByStatus(ctx)
		if err == nil {
			return counts
		}
		if !errors.Is(err, ErrNotCounted) || time.Now().After(deadline) {
			t.Fatalf("CountByStatus: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // the build pass has no other signal
	}
}

// CountByStatus counts from the index (three SCARD per shard, no record
// read) and follows flags, unflags and deletes; data written before the
// flagged sets existed is indexed once, in the background.
func TestRedisCountByStatus(t *testing.T) {
	srv := testredis.Start(t)
	ctx := testCtx(t)
	c := srv.Client()
	r := newTestRedis(t, srv, "")
	put := func(id string, st Status) {
		t.Helper()
		rec := fullTenant(id)
		rec.Status = st
		cur, err := r.Get(ctx, id)
		var expect int64
		if err == nil {
			expect = cur.Version
		}
		if _, err := r.Put(ctx, rec, expect); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 6; i++ {
		put(fmt.Sprintf("a%d", i), StatusActive)
	}
	put("f0", StatusReauthorizationRequired)
	put("f1", StatusReauthorizationRequired)
	put("p0", StatusPending)
	// As an earlier version left it: no flagged or pending sets, no marker.
	for s := 0; s < IndexShards; s++ {
		c.Del(ctx, r.shardKeys(s)[3], r.shardKeys(s)[4])
	}
	c.Del(ctx, r.flaggedMarker())
	if _, err := r.CountByStatus(ctx); !errors.Is(err, ErrNotCounted) {
		t.Fatalf("before the build: %v, want ErrNotCounted", err)
	}
	want := func(active, flagged int) {
		t.Helper()
		got := waitCounted(t, r)
		if got[StatusActive] != active || got[StatusReauthorizationRequired] != flagged || got[StatusPending] != 1 {
			t.Fatalf("counts %v, want %d active and %d flagged", got, active, flagged)
		}
	}
	want(6, 2)
	put("a0", StatusReauthorizationRequired) // flagged
	put("f0", StatusActive)                  // re-authorized
	if err := r.Delete(ctx, "f1"); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	c.ConfigResetStat(ctx)
	want(5, 1)
	stats := c.Info(ctx, "commandstats").Val()
	if strings.Contains(stats, "cmdstat_hmget") || strings.Contains(stats, "cmdstat_smembers") {
		t.Fatalf("a count read records or id sets:\n%s", stats)
	}
	if !strings.Contains(stats, fmt.Sprintf("cmdstat_scard:calls=%d,", 3*IndexShards)) {
		t.Fatalf("want %d SCARD for one count:\n%s", 3*IndexShards, stats)
	}
}

// ListIdentifyPending follows records whose background identification is
// pending: set by a write with Identify, removed when it ends or the
// tenant is deleted.
func TestRedisListIdentifyPending(t *testing.T) {
	srv := testredis.Start(t)
	ctx := testCtx(t)
	r := newTestRedis(t, srv, "")
	now := time.Unix(1_800_000_000, 0)
	a, b := fullTenant("id-a"), fullTenant("id-b")
	a.StartIdentify("identity endpoint answered 503", now.Add(time.Second), now)
	for _, tn := range []*Tenant{a, b} {
		if _, err := r.Put(ctx, tn, 0); err != nil {
			t.Fatal(err)
		}
	}
	if ids, err := r.ListIdentifyPending(ctx); err != nil || len(ids) != 1 || ids[0] != "id-a" {
		t.Fatalf("pending identifications %v %v, want [id-a]", ids, err)
	}
	got, _ := r.Get(ctx, "id-a")
	got.Identified(Account{ID: "1", Name: "x"}, nil, now)
	if _, err := r.Put(ctx, got, got.Version); err != nil {
		t.Fatal(err)
	}
	b.StartIdentify("again", now, now)
	if _, err := r.Put(ctx, b, b.Version); err != nil {
		t.Fatal(err)
	}
	if ids, err := r.ListIdentifyPending(ctx); err != nil || len(ids) != 1 || ids[0] != "id-b" {
		t.Fatalf("after identifying a: %v %v, want [id-b]", ids, err)
	}
	if err := r.Delete(ctx, "id-b"); err != nil {
		t.Fatal(err)
	}
	if ids, err := r.ListIdentifyPending(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("after deleting b: %v %v", ids, err)
	}
}
