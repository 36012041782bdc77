package control

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/store"
)

// PUT /admin/tenants/{id} takes part in the refresh protocol like a line
// of POST /admin/import (SPEC §3 rule 19): it refuses while a refresh is
// in flight, a retried request is "unchanged", another refresh token
// needs overwrite=true. Every refusal changes nothing.
func TestPutTakesPartInTheProtocol(t *testing.T) {
	f := newFixture(t, adminToken)
	ctx := context.Background()
	body := `{"refresh_token":"RT-ONE-SECRET","access_token":"AT-ONE-SECRET","expires_in":3600}`
	code, raw, hdr := f.call(t, "PUT", "/admin/tenants/acme", adminToken, body)
	if code != 201 || hdr.Get(ImportHeader) != "created" {
		t.Fatalf("create: %d %s", code, raw)
	}
	created, _ := f.store.Get(ctx, "acme")

	// The same request again (a client's retry): nothing written.
	code, raw, hdr = f.call(t, "PUT", "/admin/tenants/acme", adminToken, body)
	if code != 200 || hdr.Get(ImportHeader) != "unchanged" || !strings.Contains(raw, `"version":1`) {
		t.Fatalf("retried PUT: %d %s %v", code, raw, hdr)
	}
	if cur, _ := f.store.Get(ctx, "acme"); cur.Version != created.Version || cur.WriteID != created.WriteID {
		t.Fatalf("retried PUT wrote: v%d", cur.Version)
	}

	unchanged := func(what string) {
		t.Helper()
		cur, err := f.store.Get(ctx, "acme")
		if err != nil || cur.RefreshToken != "RT-ONE-SECRET" {
			t.Fatalf("%s changed the record: %v", what, err)
		}
	}
	// Lock held (a refresh about to mark, or marking): 409, Retry-After.
	lock, err := f.store.TryLock(ctx, "tenant:acme", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	code, raw, hdr = f.call(t, "PUT", "/admin/tenants/acme?overwrite=true", adminToken, `{"refresh_token":"RT-TWO-SECRET"}`)
	if code != 409 || !strings.Contains(raw, `"error":"refresh_in_flight"`) || hdr.Get("Retry-After") == "" {
		t.Fatalf("PUT while locked: %d %s", code, raw)
	}
	unchanged("PUT while locked")
	if err := lock.Release(ctx); err != nil {
		t.Fatal(err)
	}

	// The in-flight mark without the lock (the holder's lease ran out
	// while it still writes): 409 as well, even with overwrite.
	marked := created.Clone()
	marked.MarkRefresh(store.Mark{ID: "holder", StartedAt: time.Now(), Lease: time.Second, Grace: 2 * time.Second})
	if _, err := f.store.Put(ctx, marked, created.Version); err != nil {
		t.Fatal(err)
	}
	code, raw, _ = f.call(t, "PUT", "/admin/tenants/acme?overwrite=true", adminToken, `{"refresh_token":"RT-TWO-SECRET"}`)
	if code != 409 || !strings.Contains(raw, `"error":"refresh_in_flight"`) {
		t.Fatalf("PUT over a mark: %d %s", code, raw)
	}
	if cur, _ := f.store.Get(ctx, "acme"); !cur.HasMark("holder") {
		t.Fatal("PUT cleared another writer's mark")
	}
	done := marked.Clone()
	done.ApplyGrant(store.Tokens{Access: "AT-ONE-SECRET", Refresh: "RT-ONE-SECRET", AccessExpiry: time.Now().Add(time.Hour)}, time.Now())
	if _, err := f.store.Put(ctx, done, marked.Version); err != nil {
		t.Fatal(err)
	}

	// Another refresh token without overwrite: 409; a bad overwrite: 400.
	code, raw, _ = f.call(t, "PUT", "/admin/tenants/acme", adminToken, `{"refresh_token":"RT-TWO-SECRET"}`)
	if code != 409 || !strings.Contains(raw, `"error":"refresh_token_differs"`) {
		t.Fatalf("PUT with another token: %d %s", code, raw)
	}
	unchanged("PUT with another token")
	if code, raw, _ = f.call(t, "PUT", "/admin/tenants/acme?overwrite=yes", adminToken, `{"refresh_token":"RT-TWO-SECRET"}`); code != 400 {
		t.Fatalf("overwrite=yes: %d %s", code, raw)
	}
	unchanged("overwrite=yes")
	// An invalid domain_prefix is refused as in a bulk import line.
	if code, raw, _ = f.call(t, "PUT", "/admin/tenants/acme?overwrite=true", adminToken, `{"refresh_token":"RT-TWO-SECRET","domain_prefix":"a.b"}`); code != 400 {
		t.Fatalf("bad domain_prefix: %d %s", code, raw)
	}
	unchanged("bad domain_prefix")

	code, raw, hdr = f.call(t, "PUT", "/admin/tenants/acme?overwrite=true", adminToken, `{"refresh_token":"RT-TWO-SECRET"}`)
	if code != 200 || hdr.Get(ImportHeader) != "updated" {
		t.Fatalf("overwrite: %d %s", code, raw)
	}
	if cur, _ := f.store.Get(ctx, "acme"); cur.RefreshToken != "RT-TWO-SECRET" || cur.RefreshInFlight {
		t.Fatalf("overwrite stored %+v", cur.Status)
	}
	if strings.Contains(raw, "SECRET") {
		t.Error("an admin answer holds a token")
	}

	// The store down: 503, nothing written.
	f.store.Close()
	if code, raw, _ = f.call(t, "PUT", "/admin/tenants/other", adminToken, body); code != 503 {
		t.Fatalf("store down: %d %s", code, raw)
	}
}
