package audit3lease_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/defect"
	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/internal/testredis"
	"github.com/lsproxy/lsproxy/store"
)

// AUDIT3-F3 (SPEC §3 rule 14): PutAcked treats "WAIT fell short and the
// master now reports 0 connected replicas" as "a master without replicas"
// and lets the mark through unacknowledged (store/replicas.go:211), and
// replicaWait does the same once the periodic INFO read sees 0. A master
// whose replica link just dropped cannot be told apart from a freshly
// promoted master that way. In a partition that separates the master from
// its replica (and Sentinel), the replica is promoted with the pre-mark
// record while holder A, still reaching the old master, sends the refresh
// token; a holder B on the promoted master sends it again.
//
// The partition is simulated by REPLICAOF NO ONE on the replica (what the
// promotion does; it also drops the master's replication link at once).
func TestAudit3SplitBrainWritesThroughWithZeroReplicas(t *testing.T) { splitBrainScenario(t, t.Errorf) }

// TestAudit3SplitBrainDefectFailsAgain: with defect 4 (ZeroReplicasAcked)
// switched on, both sides of the split brain send again.
func TestAudit3SplitBrainDefectFailsAgain(t *testing.T) {
	defer defect.Enable(defect.ZeroReplicasAcked)()
	var failures []string
	splitBrainScenario(t, func(format string, args ...any) { failures = append(failures, fmt.Sprintf(format, args...)) })
	if len(failures) == 0 {
		t.Fatal("with the defect on, the split-brain reproduction passed: it no longer tells the defect apart")
	}
}

func splitBrainScenario(t *testing.T, errorf func(format string, args ...any)) {
	emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeries, AccessTTL: time.Hour})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	master := testredis.Start(t, "--repl-diskless-sync-delay", "0")
	replica := testredis.Start(t, "--replicaof", "127.0.0.1", fmt.Sprint(master.Port()))
	ctx := context.Background()
	raw, rawReplica := master.Client(), replica.Client()
	waitUntil(t, 10*time.Second, "the replica to sync", func() bool {
		s, err := raw.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(s, "connected_slaves:1") && strings.Contains(s, "state=online")
	})
	k := keys(t)
	open := func(url string) *store.Redis {
		c, err := store.DialRedis(ctx, store.RedisConfig{URL: url})
		if err != nil {
			t.Fatal(err)
		}
		s := store.NewRedis(c, store.RedisOptions{Keys: k, WaitReplicas: 1, WaitTimeout: time.Second})
		t.Cleanup(func() { s.Close() })
		return s
	}
	sA := open(master.URL())
	if info, err := sA.DetectReplicas(ctx); err != nil || info.Connected != 1 || info.Wait != 1 {
		t.Fatalf("DetectReplicas = %+v, %v", info, err)
	}
	putTenant(t, sA, emu, "acme")
	if n, err := raw.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT for the import: %d, %v", n, err)
	}
	waitUntil(t, 5*time.Second, "the record on the replica", func() bool {
		n, err := rawReplica.Exists(ctx, "lsproxy:tenant:{acme}").Result()
		return err == nil && n == 1
	})
	time.Sleep(1100 * time.Millisecond) // past replicaRecheckMin since DetectReplicas

	// Partition: the replica (with Sentinel on its side) is promoted.
	if err := rawReplica.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	mA := auth.NewManager(sA, oauthClient(emu, srv.URL, 0, nil), auth.ManagerOptions{GuardThreshold: -1})
	_, errA := mA.Token(ctx, "acme")
	info, _ := raw.Info(ctx, "replication").Result()
	t.Logf("A on the old master: err=%v; emulator grants=%d; old master now: %q", errA, emu.Stats().RefreshGrants,
		strings.Join(strings.Fields(strings.SplitN(info, "connected_slaves:", 2)[1])[:1], ""))

	sB := open(replica.URL()) // the promoted master
	mB := auth.NewManager(sB, oauthClient(emu, srv.URL, 0, nil), auth.ManagerOptions{GuardThreshold: -1})
	_, errB := mB.Token(ctx, "acme")
	st := emu.Stats()
	t.Logf("B on the promoted replica: err=%v; emulator grants=%d reuse=%d active grants=%d", errB, st.RefreshGrants, st.ReuseDetected, emu.ActiveGrants("acme"))
	if st.ReuseDetected != 0 {
		errorf("rule 14: A sent the refresh token with its lock and mark acknowledged by no replica; after the failover B sent it again (reuse %d, grant revoked)", st.ReuseDetected)
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// HELD check (rule 14): WAIT times out after the mark was written: nothing
// is sent, the request answers token_unavailable, and the mark is undone on
// the master (no successor has to wait out a grace).
func TestAudit3HeldWaitTimeoutUndoesMark(t *testing.T) {
	emu := emulator.New(emulator.Config{Mode: emulator.ModeKSeries, AccessTTL: time.Hour})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	master := testredis.Start(t, "--repl-diskless-sync-delay", "0")
	replica := testredis.Start(t, "--replicaof", "127.0.0.1", fmt.Sprint(master.Port()))
	ctx := context.Background()
	raw := master.Client()
	waitUntil(t, 10*time.Second, "the replica to sync", func() bool {
		s, err := raw.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(s, "connected_slaves:1") && strings.Contains(s, "state=online")
	})
	c, err := store.DialRedis(ctx, store.RedisConfig{URL: master.URL()})
	if err != nil {
		t.Fatal(err)
	}
	s := store.NewRedis(c, store.RedisOptions{Keys: keys(t), WaitReplicas: 1, WaitTimeout: time.Second})
	defer s.Close()
	if _, err := s.DetectReplicas(ctx); err != nil {
		t.Fatal(err)
	}
	putTenant(t, s, emu, "acme")
	replica.Freeze()
	defer replica.Thaw()
	m := auth.NewManager(s, oauthClient(emu, srv.URL, 0, nil), auth.ManagerOptions{GuardThreshold: -1})
	_, err = m.Token(ctx, "acme")
	rec, _ := s.Get(ctx, "acme")
	t.Logf("Token = %v; token requests=%d; stored in_flight=%v mark=%q status=%s", err, emu.Stats().TokenRequests, rec.RefreshInFlight, rec.RefreshMark, rec.Status)
	if err == nil || emu.Stats().TokenRequests != 0 || rec.RefreshInFlight || rec.RefreshMark != "" {
		t.Errorf("unacknowledged mark: want 503, nothing sent, mark undone")
	}
}
