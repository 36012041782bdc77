package emulator_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lsproxy/lsproxy/internal/emulator"
)

func TestRSeriesBucket(t *testing.T) {
	v := start(t, emulator.Config{Mode: emulator.ModeRSeries})
	v.em.SetRateLimit(emulator.RateLimit{BucketSize: 20, DripRate: 2})
	at := v.em.IssueGrant("acme").AccessToken
	r := v.api(http.MethodPost, "/API/Sale.json", at)
	if r.status != 200 || r.hdr.Get("X-LS-API-Bucket-Level") != "10/20" || r.hdr.Get("X-LS-API-Drip-Rate") != "2" {
		t.Fatalf("write: %d %v", r.status, r.hdr)
	}
	for i := range 10 {
		if r = v.api(http.MethodGet, "/API/Item.json", at); r.status != 200 {
			t.Fatalf("read %d: %d", i, r.status)
		}
	}
	r = v.api(http.MethodGet, "/API/Item.json", at)
	if r.status != 429 || r.hdr.Get("Retry-After") != "1" || r.hdr.Get("X-LS-API-Bucket-Level") != "20/20" {
		t.Fatalf("full bucket: %d %v", r.status, r.hdr)
	}
	v.clk.Advance(1500 * time.Millisecond) // 3 units drained
	if r = v.api(http.MethodGet, "/API/Item.json", at); r.status != 200 || r.hdr.Get("X-LS-API-Bucket-Level") != "18/20" {
		t.Fatalf("after drip: %d %v", r.status, r.hdr)
	}
	if acc, lim := v.em.RateLimitCounts("acme"); acc != 12 || lim != 1 || v.em.RateLimited() != 1 {
		t.Fatalf("counts = %d, %d", acc, lim)
	}
}

func TestBurstLimiter(t *testing.T) {
	v := start(t, emulator.Config{Mode: emulator.ModeRSeries})
	v.em.SetRateLimit(emulator.RateLimit{BucketSize: 100, DripRate: 1, Burst: 3})
	at := v.em.IssueGrant("acme").AccessToken
	for range 3 {
		if r := v.api(http.MethodGet, "/x", at); r.status != 200 {
			t.Fatalf("status %d", r.status)
		}
	}
	if r := v.api(http.MethodGet, "/x", at); r.status != 429 || r.hdr.Get("Retry-After") != "1" {
		t.Fatalf("burst: %d %v", r.status, r.hdr)
	}
	v.clk.Advance(time.Second)
	if r := v.api(http.MethodGet, "/x", at); r.status != 200 {
		t.Fatalf("after a second: %d", r.status)
	}
}

func TestXSeriesWindow(t *testing.T) {
	v := start(t, emulator.Config{Mode: emulator.ModeXSeries})
	v.em.SetRateLimit(emulator.RateLimit{WindowLimit: 2, Window: time.Minute})
	at := v.em.IssueGrant("shop").AccessToken
	reset := v.clk.Now().Add(time.Minute)
	for i := range 2 {
		r := v.api(http.MethodPost, "/api/2.0/products", at)
		if r.status != 200 || r.hdr.Get("X-RateLimit-Limit") != "2" || r.hdr.Get("X-RateLimit-Remaining") != []string{"1", "0"}[i] {
			t.Fatalf("request %d: %d %v", i, r.status, r.hdr)
		}
	}
	r := v.api(http.MethodGet, "/api/2.0/products", at)
	ra, err := http.ParseTime(r.hdr.Get("Retry-After"))
	if r.status != 429 || err != nil || !ra.Equal(reset) {
		t.Fatalf("over the window: %d Retry-After %q", r.status, r.hdr.Get("Retry-After"))
	}
	v.clk.Advance(time.Minute)
	if r = v.api(http.MethodGet, "/api/2.0/products", at); r.status != 200 {
		t.Fatalf("new window: %d", r.status)
	}
}

func TestThrottleAndControl(t *testing.T) {
	v := start(t, emulator.Config{Mode: emulator.ModeRSeries})
	ctl := httptest.NewServer(v.em.ControlHandler())
	defer ctl.Close()
	post := func(path string) int {
		resp, err := http.Post(ctl.URL+path, "text/plain", strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, bad := range []string{"/rate-limit?bucket=x", "/rate-limit?bucket=20", "/rate-limit?window=forever", "/throttle?tenant=a", "/throttle?d=1s"} {
		if s := post(bad); s != 400 {
			t.Errorf("%s: %d, want 400", bad, s)
		}
	}
	if s := post("/rate-limit?bucket=20&drip=2&burst=10"); s != 204 {
		t.Fatalf("rate-limit: %d", s)
	}
	if s := post("/throttle?tenant=acme&d=5s"); s != 204 {
		t.Fatalf("throttle: %d", s)
	}
	at := v.em.IssueGrant("acme").AccessToken
	r := v.api(http.MethodGet, "/x", at)
	ra, err := http.ParseTime(r.hdr.Get("Retry-After"))
	if r.status != 429 || err != nil || !ra.Equal(v.clk.Now().Add(5*time.Second)) {
		t.Fatalf("throttled: %d %q", r.status, r.hdr.Get("Retry-After"))
	}
	v.clk.Advance(5 * time.Second)
	if r = v.api(http.MethodGet, "/x", at); r.status != 200 {
		t.Fatalf("after the throttle: %d", r.status)
	}
}
