package control

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/store"
)

func (f *fixture) putTenant(t *testing.T, id string, status store.Status) {
	t.Helper()
	tn := &store.Tenant{ID: id, RefreshToken: "rt-" + id, Status: status, CreatedAt: time.Now()}
	if status == store.StatusReauthorizationRequired {
		tn.Reason = "invalid_grant"
	}
	if _, err := f.store.Put(context.Background(), tn, 0); err != nil {
		t.Fatal(err)
	}
}

type listPageBody struct {
	Tenants    []TenantView `json:"tenants"`
	NextCursor *string      `json:"next_cursor"`
}

func (f *fixture) listAll(t *testing.T, query url.Values) (ids []string, pages int) {
	t.Helper()
	for pages = 1; pages < 100; pages++ {
		code, body, _ := f.call(t, "GET", "/admin/tenants?"+query.Encode(), adminToken, "")
		if code != 200 {
			t.Fatalf("list %s: %d %s", query.Encode(), code, body)
		}
		var lb listPageBody
		if err := json.Unmarshal([]byte(body), &lb); err != nil || lb.NextCursor == nil {
			t.Fatalf("list body %s: %v (next_cursor must always be present)", body, err)
		}
		for _, v := range lb.Tenants {
			ids = append(ids, v.ID)
		}
		if *lb.NextCursor == "" {
			return ids, pages
		}
		query.Set("cursor", *lb.NextCursor)
	}
	t.Fatal("listing did not end")
	return nil, 0
}

// TestListPaging: pages of limit, in id order, every tenant once; the
// status filter; next_cursor "" on the last page.
func TestListPaging(t *testing.T) {
	f := newFixture(t, adminToken)
	var want, flagged []string
	for i := range 23 {
		id := fmt.Sprintf("t%02d", i)
		st := store.StatusActive
		if i%5 == 0 {
			st = store.StatusReauthorizationRequired
			flagged = append(flagged, id)
		}
		f.putTenant(t, id, st)
		want = append(want, id)
	}
	ids, pages := f.listAll(t, url.Values{"limit": {"5"}})
	if strings.Join(ids, ",") != strings.Join(want, ",") || pages != 5 {
		t.Fatalf("paged list: %d pages %v, want 5 pages %v", pages, ids, want)
	}
	ids, _ = f.listAll(t, url.Values{"limit": {"2"}, "status": {"reauthorization_required"}})
	if strings.Join(ids, ",") != strings.Join(flagged, ",") {
		t.Fatalf("flagged: %v, want %v", ids, flagged)
	}
	ids, pages = f.listAll(t, url.Values{})
	if len(ids) != 23 || pages != 1 {
		t.Fatalf("default page: %d tenants in %d pages", len(ids), pages)
	}
	ids, _ = f.listAll(t, url.Values{"status": {"active"}, "limit": {"1000"}})
	if len(ids) != 23-len(flagged) {
		t.Fatalf("active: %v", ids)
	}
	// A deleted cursor tenant: the listing continues after it.
	code, body, _ := f.call(t, "GET", "/admin/tenants?limit=3", adminToken, "")
	var lb listPageBody
	_ = json.Unmarshal([]byte(body), &lb)
	if code != 200 || lb.NextCursor == nil || *lb.NextCursor == "" {
		t.Fatalf("first page: %d %s", code, body)
	}
	if err := f.store.Delete(context.Background(), "t02"); err != nil {
		t.Fatal(err)
	}
	code, body, _ = f.call(t, "GET", "/admin/tenants?limit=3&cursor="+*lb.NextCursor, adminToken, "")
	_ = json.Unmarshal([]byte(body), &lb)
	if code != 200 || len(lb.Tenants) == 0 || lb.Tenants[0].ID != "t03" {
		t.Fatalf("after a deleted cursor tenant: %d %s", code, body)
	}
	if strings.Contains(body, "rt-") {
		t.Fatalf("a list answer carries a refresh token: %s", body)
	}
}

// TestListBadQuery: each bad parameter is a 400 naming it, and lists nothing.
func TestListBadQuery(t *testing.T) {
	f := newFixture(t, adminToken)
	f.putTenant(t, "a", store.StatusActive)
	for _, q := range []string{"status=flagged", "limit=0", "limit=-1", "limit=abc", "limit=1001",
		"cursor=%25%25", "cursor=" + encodeCursor("bad id with spaces"), "cursor=!!"} {
		code, body, hdr := f.call(t, "GET", "/admin/tenants?"+q, adminToken, "")
		name, _, _ := strings.Cut(q, "=")
		if code != 400 || hdr.Get("X-Lsproxy-Error") != "bad_request" || !strings.Contains(body, name) || strings.Contains(body, `"tenants"`) {
			t.Errorf("?%s: %d %s", q, code, body)
		}
	}
}

// TestControlRequestID: control responses carry X-Request-Id and admin
// error bodies quote it.
func TestControlRequestID(t *testing.T) {
	f := newFixture(t, adminToken)
	code, body, hdr := f.call(t, "GET", "/admin/tenants/nobody", adminToken, "")
	id := hdr.Get("X-Request-Id")
	var eb map[string]string
	_ = json.Unmarshal([]byte(body), &eb)
	if code != 404 || id == "" || eb["request_id"] != id {
		t.Fatalf("%d %s X-Request-Id %q", code, body, id)
	}
	if _, _, hdr := f.call(t, "GET", "/healthz", "", ""); hdr.Get("X-Request-Id") == "" {
		t.Fatal("healthz without X-Request-Id")
	}
}
