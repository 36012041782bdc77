package store

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/lsproxy/lsproxy/internal/defect"
	"github.com/lsproxy/lsproxy/internal/testredis"
)

// AUDIT3-F8: Rekey's write is fenced by the version number only
// (rekey.go: t.WriteID = ""), so a version number that repeats between its
// read and its write (the tenant deleted and created again; after a
// failover: writes lost, then new writes) lets Rekey's stale copy win. SPEC
// §3 rule 12 asks that a repeated version number never lets a stale CAS win.
// Here: Rekey reads the tenant (version 1, refresh token RT-old); meanwhile
// an admin deletes it and the merchant re-authorizes (created again at
// version 1, refresh token RT-new). Rekey then writes RT-old back over
// RT-new: the newly issued refresh token is lost.
func TestAudit3RekeyABAOverwritesRecreatedTenant(t *testing.T) {
	srv := testredis.Start(t)
	redisH := func() harness {
		return &redisHarness{prefix: uniquePrefix(),
			newClient: func() redis.UniversalClient { return redis.NewClient(&redis.Options{Addr: srv.Addr}) }}
	}
	t.Run("bolt", func(t *testing.T) { audit3RekeyABA(t, &boltHarness{dir: t.TempDir()}, "RT-new") })
	t.Run("redis", func(t *testing.T) { audit3RekeyABA(t, redisH(), "RT-new") })
	// The test-only switch brings the defect back: the test can fail.
	t.Run("defect RekeyVersionOnly", func(t *testing.T) {
		defer defect.Enable(defect.RekeyVersionOnly)()
		audit3RekeyABA(t, &boltHarness{dir: t.TempDir()}, "RT-old")
		audit3RekeyABA(t, redisH(), "RT-old")
	})
}

func audit3RekeyABA(t *testing.T, h harness, want string) {
	ctx := testCtx(t)
	k := testKeys(t, 2)
	s := h.Open(t, mustKeyring(t, k[0]))
	old := fullTenant("aba")
	old.RefreshToken = "RT-old"
	if _, err := s.Put(ctx, old, 0); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	s = h.Open(t, mustKeyring(t, k[1], k[0])) // rotated key: "aba" needs a rekey

	peer := h.Peer(t, s)
	setHook(t, func(id string) {
		s := peer
		// Between Rekey's read and its write: deleted and created again.
		if err := s.Delete(context.Background(), id); err != nil {
			t.Error(err)
			return
		}
		fresh := fullTenant(id)
		fresh.RefreshToken = "RT-new"
		if v, err := s.Put(context.Background(), fresh, 0); err != nil || v != 1 {
			t.Errorf("re-create = %d, %v", v, err)
		}
	})
	o, err := Rekey(ctx, s, "aba", 3)
	t.Logf("Rekey = %v, %v", o, err)
	got, err := s.Get(ctx, "aba")
	if err != nil {
		t.Fatal(err)
	}
	if want == "RT-old" {
		if got.RefreshToken != want {
			t.Fatalf("stored refresh token %q with the defect switched on, want the stale RT-old", got.RefreshToken)
		}
		return
	}
	if got.RefreshToken != want {
		t.Fatalf("stored refresh token %q after Rekey: the re-created tenant's RT-new was overwritten by Rekey's stale copy (ABA on the version number)", got.RefreshToken)
	}
}
