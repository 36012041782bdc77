package store

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/defect"
	"github.com/lsproxy/lsproxy/internal/testredis"
)

// startReplica runs a replica of master and waits until the master counts
// it as connected.
// The master must run with --repl-diskless-sync-delay 0 (masterArgs).
func startReplica(t *testing.T, master *testredis.Server) *testredis.Server {
	t.Helper()
	rep := testredis.Start(t, "--replicaof", "127.0.0.1", fmt.Sprint(master.Port()))
	deadline := time.Now().Add(waitMax)
	for {
		s, err := master.Client().Info(testCtx(t), "replication").Result()
		if err == nil && strings.Contains(s, "connected_slaves:1") && strings.Contains(s, "state=online") {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica did not connect: %v %s", err, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// masterArgs let a replica sync at once (the default waits 5 s for more).
var masterArgs = []string{"--repl-diskless-sync-delay", "0"}

func TestRedisPutAckedWithoutReplicasIsPut(t *testing.T) {
	srv := testredis.Start(t)
	ctx := testCtx(t)
	r := NewRedis(srv.Client(), RedisOptions{Keys: mustKeyring(t, testKeys(t, 1)...), WaitReplicas: 1})
	info, err := r.DetectReplicas(ctx)
	if err != nil || info.Connected != 0 || info.Wait != 0 {
		t.Fatalf("DetectReplicas = %+v, %v; want none", info, err)
	}
	tn := fullTenant("a")
	if _, err := r.Put(ctx, tn, 0); err != nil {
		t.Fatal(err)
	}
	if v, err := r.PutAcked(ctx, tn, 1); err != nil || v != 2 {
		t.Fatalf("PutAcked = %d, %v", v, err)
	}
}

func TestRedisPutAckedWaitsForReplica(t *testing.T) {
	master := testredis.Start(t, masterArgs...)
	rep := startReplica(t, master)
	ctx := testCtx(t)
	keys := mustKeyring(t, testKeys(t, 1)...)
	// A generous bound for the live replica (the machine may be loaded), a
	// short one for the frozen replica below.
	r := NewRedis(master.Client(), RedisOptions{Keys: keys, WaitReplicas: 1, WaitTimeout: 5 * time.Second})
	info, err := r.DetectReplicas(ctx)
	if err != nil || info.Connected != 1 || info.Wait != 1 || info.Timeout != 5*time.Second {
		t.Fatalf("DetectReplicas = %+v, %v", info, err)
	}
	tn := fullTenant("a")
	if _, err := r.Put(ctx, tn, 0); err != nil {
		t.Fatal(err)
	}
	// A lock taken before the acked write is on the replica too.
	if _, err := r.TryLock(ctx, "tenant:a", longTTL); err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutAcked(ctx, tn, 1); err != nil {
		t.Fatalf("PutAcked with a live replica: %v", err)
	}
	rc := rep.Client()
	if n, err := rc.Exists(ctx, r.lockKey("tenant:a")).Result(); err != nil || n != 1 {
		t.Fatalf("lock on the replica after PutAcked: %d, %v", n, err)
	}
	if v, err := rc.HGet(ctx, r.tenantKey("a"), "w").Result(); err != nil || v != tn.WriteID {
		t.Fatalf("write id on the replica = %q, %v; want %q", v, err, tn.WriteID)
	}

	// The lock renewal before a send (rule 17) is acknowledged too: the
	// replica holds the extended TTL.
	lock, err := r.TryLock(ctx, "tenant:renew", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := lock.(AckedLock).RefreshAcked(ctx, time.Hour); err != nil {
		t.Fatalf("RefreshAcked with a live replica: %v", err)
	}
	if ttl, err := rc.PTTL(ctx, r.lockKey("tenant:renew")).Result(); err != nil || ttl < 59*time.Minute {
		t.Fatalf("lock TTL on the replica after RefreshAcked: %v, %v; want about 1h", ttl, err)
	}

	// A frozen replica does not acknowledge: the write is applied on the
	// master but reported as not acknowledged; so is a lock renewal.
	short := NewRedis(master.Client(), RedisOptions{Keys: keys, WaitReplicas: 1, WaitTimeout: 300 * time.Millisecond})
	shortLock, err := short.TryLock(ctx, "tenant:short", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	rep.Freeze()
	start := time.Now()
	v, err := short.PutAcked(ctx, tn, 2)
	rerr := shortLock.(AckedLock).RefreshAcked(ctx, time.Minute)
	rep.Thaw()
	if !errors.Is(rerr, ErrNotAcked) {
		t.Fatalf("RefreshAcked with a frozen replica: %v; want ErrNotAcked", rerr)
	}
	// A lock no longer held is lost, not renewed.
	if err := master.Client().Del(ctx, short.lockKey("tenant:short")).Err(); err != nil {
		t.Fatal(err)
	}
	if err := shortLock.(AckedLock).RefreshAcked(ctx, time.Minute); !errors.Is(err, ErrLockLost) {
		t.Fatalf("RefreshAcked of a lost lock: %v; want ErrLockLost", err)
	}
	if !errors.Is(err, ErrNotAcked) || v != 3 || tn.Version != 3 {
		t.Fatalf("PutAcked with a frozen replica = %d, %v; want 3, ErrNotAcked", v, err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("PutAcked waited %v, bound 300ms", el)
	}
	// Negative control: with waiting off the same write is a plain Put.
	off := NewRedis(master.Client(), RedisOptions{Keys: mustKeyring(t, testKeys(t, 1)...)})
	if info, _ := off.DetectReplicas(ctx); info.Wait != 0 || info.Connected != 1 {
		t.Fatalf("waiting off: %+v", info)
	}
}

// TestRedisPutAckedAfterReplicasGone: the master loses its only replica.
// With a replica still connected (frozen) WAIT falls short: not
// acknowledged. With the replica gone and the master's replication id
// unchanged (the master on the losing side of a partition looks just like
// this) a write is still not acknowledged, nor a lock renewal: nothing is
// sent (SPEC §3 rule 14 as amended). Only a master whose replication id
// changed (it was promoted) writes without WAIT. Defect 4
// (ZeroReplicasAcked) brings back "0 replicas read back = acknowledged".
func TestRedisPutAckedAfterReplicasGone(t *testing.T) {
	master := testredis.Start(t, masterArgs...)
	rep := startReplica(t, master)
	ctx := testCtx(t)
	var reports []string
	var mu sync.Mutex
	r := NewRedis(master.Client(), RedisOptions{Keys: mustKeyring(t, testKeys(t, 1)...), WaitReplicas: 1,
		WaitTimeout: 300 * time.Millisecond, OnError: func(op string, err error) {
			mu.Lock()
			reports = append(reports, op+": "+err.Error())
			mu.Unlock()
		}})
	if info, err := r.DetectReplicas(ctx); err != nil || info.Wait != 1 {
		t.Fatalf("DetectReplicas = %+v, %v", info, err)
	}
	tn := fullTenant("a")
	if _, err := r.Put(ctx, tn, 0); err != nil {
		t.Fatal(err)
	}
	// backdate: the last read is older than the re-read's rate limit.
	backdate := func() {
		r.rep.mu.Lock()
		r.rep.readAt = time.Now().Add(-2 * replicaRecheckMin)
		r.rep.mu.Unlock()
	}

	rep.Freeze()
	backdate()
	_, err := r.PutAcked(ctx, tn, tn.Version)
	rep.Thaw()
	if !errors.Is(err, ErrNotAcked) {
		t.Fatalf("PutAcked with a frozen, connected replica: %v; want ErrNotAcked", err)
	}

	rep.Kill()
	deadline := time.Now().Add(waitMax)
	for {
		s, err := master.Client().Info(ctx, "replication").Result()
		if err == nil && strings.Contains(s, "connected_slaves:0") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("master still counts its replica: %v %s", err, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
	backdate()
	if _, err := r.PutAcked(ctx, tn, tn.Version); !errors.Is(err, ErrNotAcked) {
		t.Fatalf("PutAcked on a master whose replica is gone (same replication id): %v; want ErrNotAcked", err)
	}
	if _, err := r.PutAcked(ctx, tn, tn.Version); !errors.Is(err, ErrNotAcked) {
		t.Fatalf("next PutAcked: %v; want ErrNotAcked (waiting is not skipped)", err)
	}
	lock, err := r.TryLock(ctx, "tenant:a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := lock.(AckedLock).RefreshAcked(ctx, time.Minute); !errors.Is(err, ErrNotAcked) {
		t.Fatalf("RefreshAcked on a master whose replica is gone: %v; want ErrNotAcked", err)
	}
	func() {
		defer defect.Enable(defect.ZeroReplicasAcked)()
		backdate()
		if _, err := r.PutAcked(ctx, tn, tn.Version); err != nil {
			t.Fatalf("with the defect on, PutAcked: %v; want the old acknowledgement", err)
		}
	}()
	// Promoted: a new replication id (as REPLICAOF NO ONE gives).
	r.rep.mu.Lock()
	r.rep.hadReplicas = "an-earlier-replication-id"
	r.rep.mu.Unlock()
	backdate()
	if _, err := r.PutAcked(ctx, tn, tn.Version); err != nil {
		t.Fatalf("PutAcked on a promoted master without replicas: %v", err)
	}
	if err := lock.(AckedLock).RefreshAcked(ctx, time.Minute); err != nil {
		t.Fatalf("RefreshAcked on a promoted master: %v", err)
	}
	if info, _ := r.DetectReplicas(ctx); info.Connected != 0 || info.Wait != 0 {
		t.Fatalf("after the re-read: %+v; want no replicas, no wait", info)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.ContainsFunc(reports, func(s string) bool { return strings.Contains(s, "0 connected replicas (was 1)") }) {
		t.Fatalf("change not reported: %q", reports)
	}
}

// TestRedisRecordWithoutWriteID: a record written before write ids (no
// hash field w) reads with an empty WriteID and is updated fenced by its
// version, then carries a write id.
func TestRedisRecordWithoutWriteID(t *testing.T) {
	srv := testredis.Start(t)
	ctx := testCtx(t)
	keys := mustKeyring(t, testKeys(t, 1)...)
	r := NewRedis(srv.Client(), RedisOptions{Keys: keys})
	if _, err := r.Put(ctx, fullTenant("old"), 0); err != nil {
		t.Fatal(err)
	}
	if err := srv.Client().HDel(ctx, r.tenantKey("old"), "w").Err(); err != nil {
		t.Fatal(err)
	}
	got, err := r.Get(ctx, "old")
	if err != nil || got.WriteID != "" {
		t.Fatalf("Get = write id %q, %v; want empty", got.WriteID, err)
	}
	if _, err := r.Put(ctx, got, got.Version); err != nil || got.WriteID == "" {
		t.Fatalf("update of an old record: %v (write id %q)", err, got.WriteID)
	}
}
