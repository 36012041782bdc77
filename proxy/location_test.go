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
	"sync/atomic"
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
// both): each location reaches the grant that covers it; 1002 is
// ambiguous (409, naming no tenant) until one grant is flagged, then it
// moves to the other covering grant; unknown → 404.
func TestLocationRouting(t *testing.T) {
	x := newLocHarness(t)
	putLocations(t, x.s, "biz-a", "1001", "1002")
	putLocations(t, x.s, "biz-b", "1002", "1003")
	for loc, want := range map[string]string{"1001": "biz-a", "1003": "biz-b"} {
		if st, body, _ := x.get(t, map[string]string{"X-Location": loc}); st != 200 || body != want {
			t.Errorf("location %s: %d %q, want %s", loc, st, body, want)
		}
	}
	st, body, hdr := x.get(t, map[string]string{"X-Location": "1002"})
	if st != http.StatusConflict || hdr.Get("X-Lsproxy-Error") != httperr.AmbiguousLocation.Code || strings.Contains(body, "biz-") {
		t.Errorf("location covered by two tenants: %d %s", st, body)
	}
	x.res.Preferred = map[string]string{"1002": "biz-b"}
	x.res.Forget("biz-a")
	if st, body, _ := x.get(t, map[string]string{"X-Location": "1002"}); st != 200 || body != "biz-b" {
		t.Errorf("preferred tenant: %d %q", st, body)
	}
	x.res.Preferred = nil
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

// TestLocationBehindCallerKey (issue 22): with caller keys, the key is
// checked before any location lookup (no key: 401 for a known and an
// unknown location alike, naming no tenant, and the index is not read);
// routing chooses only among the tenants the key allows; a location
// covered only by tenants the key may not use reads as unknown (404).
func TestLocationBehindCallerKey(t *testing.T) {
	s := locationStore(t)
	putLocations(t, s, "biz-a", "1001", "1002")
	putLocations(t, s, "biz-b", "1002", "1003")
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, map[string]string{"Bearer tok-a": "biz-a", "Bearer tok-b": "biz-b"}[r.Header.Get("Authorization")])
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	keyA, hashA, _ := NewClientKey()
	keyAll, hashAll, _ := NewClientKey()
	keys, err := ParseClientKeys([]string{"app-a:" + hashA + ":biz-a", "ops:" + hashAll + ":biz-*"})
	if err != nil {
		t.Fatal(err)
	}
	callers := NewCallerAuth(keys)
	counted := &countingIndex{Bolt: s}
	res := &LocationResolver{Store: counted, TTL: time.Hour}
	h := &Handler{Upstream: u, Tokens: &fakeTokens{tokens: map[string]string{"biz-a": "tok-a", "biz-b": "tok-b"}},
		Locations: res.Resolve, Authenticate: callers.Authenticate, Caller: callers.Caller}
	if err := h.Init(); err != nil {
		t.Fatal(err)
	}
	if err := (&Handler{Upstream: u, Tokens: h.Tokens, Locations: res.Resolve, Authenticate: callers.Authenticate}).Init(); err == nil {
		t.Fatal("Init accepted Authenticate and Locations without Caller")
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	get := func(key, loc string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/o/op/data/items", nil)
		req.Header.Set("X-Location", loc)
		if key != "" {
			req.Header.Set("Proxy-Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("X-Lsproxy-Error"), strings.TrimSpace(string(b))
	}
	for _, key := range []string{"", "not-a-key"} {
		for _, loc := range []string{"1001", "9999"} {
			st, code, body := get(key, loc)
			if st != http.StatusUnauthorized || code != httperr.ProxyAuthRequired.Code || strings.Contains(body, "biz-") || strings.Contains(body, `"tenant"`) {
				t.Errorf("key %q, location %s: %d %s %s", key, loc, st, code, body)
			}
		}
	}
	if n := counted.lookups.Load(); n != 0 {
		t.Fatalf("%d location lookups before the caller was authenticated", n)
	}
	cases := []struct {
		key, loc, code, body string
		status               int
	}{
		{keyA, "1001", "", "biz-a", 200},
		{keyA, "1002", "", "biz-a", 200},                                          // biz-b is not the key's: no ambiguity
		{keyA, "1003", httperr.UnknownLocation.Code, "", http.StatusNotFound},     // only biz-b covers it
		{keyA, "9999", httperr.UnknownLocation.Code, "", http.StatusNotFound},     // no one covers it: the same answer
		{keyAll, "1002", httperr.AmbiguousLocation.Code, "", http.StatusConflict}, // both are the key's
		{keyAll, "1003", "", "biz-b", 200},
	}
	for _, c := range cases {
		st, code, body := get(c.key, c.loc)
		if st != c.status || code != c.code || c.body != "" && body != c.body {
			t.Errorf("location %s: %d %s %s, want %d %s %s", c.loc, st, code, body, c.status, c.code, c.body)
		}
		if c.status != 200 && strings.Contains(body, "biz-") {
			t.Errorf("location %s: the error body names a tenant: %s", c.loc, body)
		}
	}
}

// countingIndex counts location lookups.
type countingIndex struct {
	*store.Bolt
	lookups atomic.Int64
}

func (c *countingIndex) LocationTenants(ctx context.Context, location string) ([]string, error) {
	c.lookups.Add(1)
	return c.Bolt.LocationTenants(ctx, location)
}
