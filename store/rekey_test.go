package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"

	"github.com/lsproxy/lsproxy/internal/testredis"
)

// Rekey runs against both backends: the embedded store and a real Redis.
func TestRekeyBolt(t *testing.T) {
	runRekey(t, func(t *testing.T) harness { return &boltHarness{dir: t.TempDir()} })
}

func TestRekeyRedis(t *testing.T) {
	srv := testredis.Start(t)
	runRekey(t, func(t *testing.T) harness {
		return &redisHarness{
			prefix:    uniquePrefix(),
			newClient: func() redis.UniversalClient { return redis.NewClient(&redis.Options{Addr: srv.Addr}) },
		}
	})
}

// The hook is package state: these subtests run one at a time.
func runRekey(t *testing.T, newHarness func(t *testing.T) harness) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, h harness)
	}{
		{"RewritesOldKeyRecords", rekeyRewrites},
		{"UnknownKeyNamesTenantAndKeys", rekeyUnknownKey},
		{"ConflictRereadsAndKeepsNewerWrite", rekeyConflict},
		{"BoundedAttempts", rekeyBounded},
		{"ConcurrentWriters", rekeyConcurrentWriters},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newHarness(t)) })
	}
}

// kidsOf returns the key ids in tenant id's stored record.
func kidsOf(t *testing.T, s Store, id string) []string {
	t.Helper()
	_, blob, err := s.(rekeyable).getRaw(testCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	var rec record
	rec.Tenant = &Tenant{}
	if err := json.Unmarshal(blob, &rec); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range []*sealed{rec.Access, rec.Refresh} {
		if s != nil {
			out = append(out, s.KID)
		}
	}
	return out
}

func rekeyRewrites(t *testing.T, h harness) {
	ctx := testCtx(t)
	k := testKeys(t, 2)
	oldKey, newKey := k[0], k[1]
	s := h.Open(t, mustKeyring(t, oldKey))
	want := map[string]*Tenant{}
	for _, id := range []string{"a", "b", "c"} {
		tn := fullTenant(id)
		v, err := s.Put(ctx, tn, 0)
		if err != nil {
			t.Fatal(err)
		}
		tn.Version = v
		want[id] = tn
	}
	empty := &Tenant{ID: "placeholder", Status: StatusActive} // no token: nothing to re-seal
	if _, err := s.Put(ctx, empty, 0); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)

	rot := mustKeyring(t, newKey, oldKey)
	s = h.Open(t, rot)
	// A record already written with the new key is current.
	d := fullTenant("d")
	if _, err := s.Put(ctx, d, 0); err != nil {
		t.Fatal(err)
	}
	got := map[string]RekeyOutcome{}
	for _, id := range []string{"a", "b", "c", "d", "placeholder", "deleted"} {
		o, err := Rekey(ctx, s, id, 5)
		if err != nil {
			t.Fatalf("Rekey(%s): %v", id, err)
		}
		got[id] = o
	}
	wantOutcomes := map[string]RekeyOutcome{"a": RekeyRewritten, "b": RekeyRewritten, "c": RekeyRewritten,
		"d": RekeyCurrent, "placeholder": RekeyCurrent, "deleted": RekeyGone}
	if !reflect.DeepEqual(got, wantOutcomes) {
		t.Fatalf("outcomes %v, want %v", got, wantOutcomes)
	}
	for id := range want {
		for _, kid := range kidsOf(t, s, id) {
			if kid != rot.PrimaryID() {
				t.Errorf("%s still sealed with %s", id, kid)
			}
		}
	}
	// A second run finds everything current and writes nothing.
	for _, id := range []string{"a", "b", "c", "d"} {
		before, _ := s.Get(ctx, id)
		if o, err := Rekey(ctx, s, id, 5); err != nil || o != RekeyCurrent {
			t.Fatalf("second Rekey(%s) = %v, %v", id, o, err)
		}
		after, _ := s.Get(ctx, id)
		if after.Version != before.Version {
			t.Errorf("%s rewritten although current", id)
		}
	}
	mustClose(t, s)

	// The old key is no longer needed: every record opens with the new key
	// alone and is unchanged apart from its version.
	s = h.Open(t, mustKeyring(t, newKey))
	for id, w := range want {
		g, err := s.Get(ctx, id)
		if err != nil {
			t.Fatalf("Get(%s) with the new key only: %v", id, err)
		}
		w = w.Clone()
		w.Version++
		w.WriteID = g.WriteID // a new write
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s changed:\n got %+v\nwant %+v", id, g, w)
		}
	}
}

func rekeyUnknownKey(t *testing.T, h harness) {
	ctx := testCtx(t)
	k := testKeys(t, 3)
	lost := mustKeyring(t, k[0])
	s := h.Open(t, lost)
	tn := fullTenant("orphan")
	if _, err := s.Put(ctx, tn, 0); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	kr := mustKeyring(t, k[1], k[2])
	s = h.Open(t, kr)
	before := h.Raw(t)
	o, err := Rekey(ctx, s, "orphan", 5)
	if !errors.Is(err, ErrDecrypt) || o != 0 {
		t.Fatalf("Rekey = %v, %v; want ErrDecrypt", o, err)
	}
	msg := err.Error()
	for _, want := range append([]string{`"orphan"`, lost.PrimaryID()}, kr.IDs()...) {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not name %s", msg, want)
		}
	}
	if strings.Contains(msg, tn.AccessToken) || strings.Contains(msg, tn.RefreshToken) {
		t.Errorf("error holds a token: %s", msg)
	}
	if string(h.Raw(t)) != string(before) {
		t.Error("a failed rekey wrote something")
	}
	if _, err := Rekey(ctx, &wrapped{s}, "orphan", 1); !errors.Is(err, ErrRekeyUnsupported) {
		t.Errorf("foreign store: %v", err)
	}
}

type wrapped struct{ Store }

// setHook installs rekeyHook for the test.
func setHook(t *testing.T, fn func(id string)) {
	rekeyHook = fn
	t.Cleanup(func() { rekeyHook = nil })
}

// bumpVersion stands for a write by a replica still sealing with the old
// key: the record's version grows, its tokens stay sealed as they were.
func bumpVersion(t *testing.T, s Store, id string) {
	t.Helper()
	switch b := s.(type) {
	case *Bolt:
		err := b.db.Update(func(tx *bbolt.Tx) error {
			bk := tx.Bucket(bucketTenants)
			v := bytes.Clone(bk.Get([]byte(id)))
			binary.BigEndian.PutUint64(v, binary.BigEndian.Uint64(v)+1)
			return bk.Put([]byte(id), v)
		})
		if err != nil {
			t.Error(err)
		}
	case *Redis:
		if err := b.client.HIncrBy(context.Background(), b.tenantKey(id), "v", 1).Err(); err != nil {
			t.Error(err)
		}
	default:
		t.Errorf("bumpVersion: %T", s)
	}
}

func rekeyConflict(t *testing.T, h harness) {
	ctx := testCtx(t)
	k := testKeys(t, 2)
	s := h.Open(t, mustKeyring(t, k[0]))
	for _, id := range []string{"busy", "stale"} {
		if _, err := s.Put(ctx, fullTenant(id), 0); err != nil {
			t.Fatal(err)
		}
	}
	mustClose(t, s)
	s = h.Open(t, mustKeyring(t, k[1], k[0]))
	peer := h.Peer(t, s)

	// A refresh on a replica running with the new key lands between
	// Rekey's read and its write: Rekey must not overwrite it; re-reading
	// finds the record current.
	calls := 0
	setHook(t, func(id string) {
		calls++
		if calls > 1 {
			return
		}
		cur, err := peer.Get(context.Background(), id)
		if err != nil {
			t.Error(err)
			return
		}
		cur.AccessToken, cur.RefreshToken, cur.RefreshCount = "AT-new", "RT-new", cur.RefreshCount+1
		if _, err := peer.Put(context.Background(), cur, cur.Version); err != nil {
			t.Error(err)
		}
	})
	o, err := Rekey(ctx, s, "busy", 3)
	if err != nil || o != RekeyCurrent || calls != 1 {
		t.Fatalf("Rekey = %v, %v after %d writes; want current after 1", o, err, calls)
	}
	got, err := s.Get(ctx, "busy")
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken != "AT-new" || got.RefreshToken != "RT-new" || got.Version != 2 {
		t.Fatalf("the concurrent write was lost: %+v", got)
	}

	// A write by a replica still on the old key: Rekey reads again and
	// re-seals the newer record.
	calls = 0
	setHook(t, func(id string) {
		calls++
		if calls == 1 {
			bumpVersion(t, s, id)
		}
	})
	o, err = Rekey(ctx, s, "stale", 3)
	if err != nil || o != RekeyRewritten || calls != 2 {
		t.Fatalf("Rekey = %v, %v after %d attempts; want rewritten after 2", o, err, calls)
	}
	if got, err := s.Get(ctx, "stale"); err != nil || got.Version != 3 {
		t.Fatalf("stale: %+v %v", got, err)
	}
}

func rekeyBounded(t *testing.T, h harness) {
	ctx := testCtx(t)
	k := testKeys(t, 2)
	s := h.Open(t, mustKeyring(t, k[0]))
	if _, err := s.Put(ctx, fullTenant("hot"), 0); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	s = h.Open(t, mustKeyring(t, k[1], k[0]))
	calls := 0
	setHook(t, func(id string) { // an old-key writer wins every time
		calls++
		bumpVersion(t, s, id)
	})
	_, err := Rekey(ctx, s, "hot", 3)
	if !errors.Is(err, ErrConflict) || calls != 3 || !strings.Contains(err.Error(), `"hot"`) {
		t.Fatalf("Rekey = %v after %d attempts; want ErrConflict after 3", err, calls)
	}
}

// Writers keep replacing the tokens (with CAS, like refreshes on other
// replicas) while Rekey runs: no write is lost, and every record ends up
// sealed with the primary key.
func rekeyConcurrentWriters(t *testing.T, h harness) {
	ctx := testCtx(t)
	k := testKeys(t, 2)
	s := h.Open(t, mustKeyring(t, k[0]))
	ids := []string{"w0", "w1", "w2", "w3"}
	for _, id := range ids {
		if _, err := s.Put(ctx, fullTenant(id), 0); err != nil {
			t.Fatal(err)
		}
	}
	mustClose(t, s)
	kr := mustKeyring(t, k[1], k[0])
	s = h.Open(t, kr)
	peer := h.Peer(t, s)

	const writes = 30
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < writes; {
				cur, err := peer.Get(ctx, id)
				if err != nil {
					t.Error(err)
					return
				}
				cur.RefreshCount++
				if _, err := peer.Put(ctx, cur, cur.Version); err == nil {
					i++
				} else if !errors.Is(err, ErrConflict) {
					t.Error(err)
					return
				}
			}
		}()
	}
	for _, id := range ids {
		if _, err := Rekey(ctx, s, id, 100); err != nil {
			t.Errorf("Rekey(%s): %v", id, err)
		}
	}
	wg.Wait()
	for _, id := range ids {
		got, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if want := fullTenant(id).RefreshCount + writes; got.RefreshCount != want {
			t.Errorf("%s: refresh count %d, want %d (a write was lost)", id, got.RefreshCount, want)
		}
		for _, kid := range kidsOf(t, s, id) {
			if kid != kr.PrimaryID() {
				t.Errorf("%s sealed with %s after rekey and writes", id, kid)
			}
		}
	}
}
