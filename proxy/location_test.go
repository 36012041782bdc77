package proxy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/store"
)

func locationStore(t *testing.T) *store.Bolt {
	t.Helper()
	keys, err := store.ParseKeys(base64.StdEncoding.EncodeToString(make([]byte, 32)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.OpenBolt(t.TempDir(), keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// putLocations stores tenant id active with the given locations and indexes them.
func putLocations(t *testing.T, s *store.Bolt, id string, locs ...string) {
	t.Helper()
	ctx := context.Background()
	rec := &store.Tenant{ID: id, Status: store.StatusActive, RefreshToken: "rt", Account: &store.Account{ID: "1234", Name: "Bistro"}}
	for _, l := range locs {
		rec.Locations = append(rec.Locations, store.Location{ID: l, Name: "loc " + l, BusinessID: "1234"})
	}
	var expect int64
	if cur, err := s.Get(ctx, id); err == nil {
		expect = cur.Version
		rec.Status = cur.Status
	}
	if _, err := s.Put(ctx, rec, expect); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTenantLocations(ctx, id, locs); err != nil {
		t.Fatal(err)
	}
}

type locHarness struct {
	s       *store.Bolt
	res     *LocationResolver
	proxy   *httptest.Server
	mu      sync.Mutex
	seen    []http.Header
	tenants map[string]string // token -> tenant
}

func newLocHarness(t *testing.T) *locHarness {
	t.Helper()
	x := &locHarness{s: locationStore(t), tenants: map[string]string{"tok-a": "biz-a", "tok-b": "biz-b"}}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x.mu.Lock()
		x.seen = append(x.seen, r.Header.Clone())
		x.mu.Unlock()
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		io.WriteString(w, x.tenants[tok])
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	x.res = &LocationResolver{Store: x.s, TTL: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); x.res.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	h := &Handler{Upstream: u, Tokens: &fakeTokens{tokens: map[string]string{"biz-a": "tok-a", "biz-b": "tok-b"}}, Locations: x.res.Resolve}
	if err := h.Init(); err != nil {
		t.Fatal(err)
	}
	x.proxy = httptest.NewServer(h)
	t.Cleanup(x.proxy.Close)
	return x
}

func (x *locHarness) get(t *testing.T, headers map[string]string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, x.proxy.URL+"/o/op/data/items", nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), resp.Header
}

// A business with three locations split over two grants (1002 covered by
// both): each location reaches a grant that covers it; a flagged grant's
// locations move to the other covering grant; unknown → 404.
func TestLocationRouting(t *testing.T) {
	x := newLocHarness(t)
	putLocations(t, x.s, "biz-a", "1001", "1002")
	putLocations(t, x.s, "biz-b", "1002", "1003")
	for loc, want := range map[string]string{"1001": "biz-a", "1002": "biz-a", "1003": "biz-b"} {
		if st, body, _ := x.get(t, map[string]string{"X-Location": loc}); st != 200 || body != want {
			t.Errorf("location %s: %d %q, want %s", loc, st, body, want)
		}
	}
	// The tenant header wins; the location header is never forwarded.
	if st, body, _ := x.get(t, map[string]string{"X-Tenant": "biz-b", "X-Location": "1001"}); st != 200 || body != "biz-b" {
		t.Errorf("tenant header with location: %d %q", st, body)
	}
	x.mu.Lock()
	for _, h := range x.seen {
		if h.Get("X-Location") != "" || h.Get("X-Tenant") != "" {
			t.Errorf("upstream got routing headers %v", h)
		}
	}
	x.mu.Unlock()

	// Flag biz-a: 1002 moves to biz-b (the change notification drops the
	// cached choice), 1001 is covered by no active grant.
	ctx := context.Background()
	cur, _ := x.s.Get(ctx, "biz-a")
	cur.Status = store.StatusReauthorizationRequired
	if _, err := x.s.Put(ctx, cur, cur.Version); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, body, _ := x.get(t, map[string]string{"X-Location": "1002"})
		if body == "biz-b" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("location 1002 still routed to %q after biz-a was flagged", body)
		}
		time.Sleep(10 * time.Millisecond) // polling the notification's effect; bounded
	}
	for _, loc := range []string{"1001", "9999", "bad id", "../1003"} {
		st, body, hdr := x.get(t, map[string]string{"X-Location": loc})
		var eb httperr.Body
		_ = json.Unmarshal([]byte(body), &eb)
		if st != http.StatusNotFound || hdr.Get("X-Lsproxy-Error") != httperr.UnknownLocation.Code || eb.Error != httperr.UnknownLocation.Code {
			t.Errorf("location %q: %d %s", loc, st, body)
		}
	}
	// No tenant and no location header: missing_tenant as before.
	if st, _, hdr := x.get(t, nil); st != 400 || hdr.Get("X-Lsproxy-Error") != httperr.MissingTenant.Code {
		t.Errorf("no headers: %d", st)
	}
}

// Index entries left behind (tenant deleted, record no longer listing the
// location) never route a request.
func TestLocationStaleIndex(t *testing.T) {
	x := newLocHarness(t)
	ctx := context.Background()
	putLocations(t, x.s, "biz-a", "1001")
	if err := x.s.Delete(ctx, "biz-a"); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := x.get(t, map[string]string{"X-Location": "1001"}); st != http.StatusNotFound {
		t.Errorf("deleted tenant's location: %d", st)
	}
	putLocations(t, x.s, "biz-b", "1003")
	if err := x.s.SetTenantLocations(ctx, "biz-b", []string{"1003", "1004"}); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := x.get(t, map[string]string{"X-Location": "1004"}); st != http.StatusNotFound {
		t.Errorf("location in the index but not in the record: %d", st)
	}
}
