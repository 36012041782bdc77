package ratelimit

import (
	"net/http"
	"testing"
	"time"
)

func TestParseHeaders(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	tests := []struct {
		name   string
		status int
		h      http.Header
		ok     bool
		check  func(t *testing.T, o Observation)
	}{
		{"nothing", 200, hdr("Content-Type", "application/json"), false, nil},
		{"bucket with decimals", 200, hdr("X-LS-API-Bucket-Level", "12.5/60", "X-LS-API-Drip-Rate", "0.5"), true, func(t *testing.T, o Observation) {
			if o.BucketUsed != 12.5 || o.BucketSize != 60 || o.DripRate != 0.5 {
				t.Errorf("bucket = %v/%v drip %v", o.BucketUsed, o.BucketSize, o.DripRate)
			}
		}},
		{"bucket without drip takes the documented 1/s", 200, hdr("x-ls-api-bucket-level", "3/20"), true, func(t *testing.T, o Observation) {
			if o.DripRate != 1 {
				t.Errorf("drip = %v", o.DripRate)
			}
		}},
		{"bad bucket ignored", 200, hdr("X-LS-API-Bucket-Level", "abc", "X-LS-API-Drip-Rate", "2"), false, nil},
		{"zero size ignored", 200, hdr("X-LS-API-Bucket-Level", "1/0"), false, nil},
		{"NaN ignored", 200, hdr("X-LS-API-Bucket-Level", "NaN/20"), false, nil},
		{"window with epoch reset", 200, hdr("X-RateLimit-Limit", "350", "X-RateLimit-Remaining", "349", "X-RateLimit-Reset", "1796128200"), true, func(t *testing.T, o Observation) {
			if o.WindowLimit != 350 || o.WindowRemaining != 349 || !o.WindowReset.Equal(time.Unix(1796128200, 0)) {
				t.Errorf("window = %+v", o)
			}
		}},
		// Security review (rule 18): an absolute reset in 2255 would block
		// the tenant for centuries; every learned block is capped.
		{"window with epoch reset far ahead capped", 200, hdr("X-RateLimit-Limit", "350", "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "9000000000"), true, func(t *testing.T, o Observation) {
			if !o.WindowReset.Equal(now.Add(DefaultMaxBlock)) {
				t.Errorf("reset = %v, want capped at now + %v", o.WindowReset, DefaultMaxBlock)
			}
		}},
		{"window with epoch reset a day ahead capped", 200, hdr("X-RateLimit-Limit", "350", "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "1796212860"), true, func(t *testing.T, o Observation) {
			if !o.WindowReset.Equal(now.Add(DefaultMaxBlock)) {
				t.Errorf("reset = %v", o.WindowReset)
			}
		}},
		{"drip rate with no lower bound floored", 200, hdr("X-LS-API-Bucket-Level", "60/60", "X-LS-API-Drip-Rate", "1e-12"), true, func(t *testing.T, o Observation) {
			if drain := time.Duration(o.BucketSize / o.DripRate * float64(time.Second)); drain > DefaultMaxBlock {
				t.Errorf("drip %v drains the bucket in %v, want at most %v", o.DripRate, drain, DefaultMaxBlock)
			}
		}},
		{"bucket level above its size clamped", 200, hdr("X-LS-API-Bucket-Level", "1e9/60", "X-LS-API-Drip-Rate", "1"), true, func(t *testing.T, o Observation) {
			if o.BucketUsed != 60 {
				t.Errorf("used = %v, want 60", o.BucketUsed)
			}
		}},
		{"window with delta reset", 200, hdr("X-RateLimit-Limit", "10", "X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "30"), true, func(t *testing.T, o Observation) {
			if !o.WindowReset.Equal(now.Add(30 * time.Second)) {
				t.Errorf("reset = %v", o.WindowReset)
			}
		}},
		{"window with HTTP-date reset", 200, hdr("X-RateLimit-Limit", "10", "X-RateLimit-Remaining", "5", "X-RateLimit-Reset", "Tue, 01 Dec 2026 12:05:00 GMT"), true, func(t *testing.T, o Observation) {
			if !o.WindowReset.Equal(now.Add(5 * time.Minute)) {
				t.Errorf("reset = %v", o.WindowReset)
			}
		}},
		{"window without reset assumes the horizon", 200, hdr("X-RateLimit-Limit", "10", "X-RateLimit-Remaining", "5"), true, func(t *testing.T, o Observation) {
			if !o.WindowReset.Equal(now.Add(windowHorizon)) {
				t.Errorf("reset = %v", o.WindowReset)
			}
		}},
		{"429 delta seconds", 429, hdr("Retry-After", "7"), true, func(t *testing.T, o Observation) {
			if !o.BlockUntil.Equal(now.Add(7 * time.Second)) {
				t.Errorf("block = %v", o.BlockUntil)
			}
		}},
		{"429 decimal seconds", 429, hdr("Retry-After", "1.5"), true, func(t *testing.T, o Observation) {
			if !o.BlockUntil.Equal(now.Add(1500 * time.Millisecond)) {
				t.Errorf("block = %v", o.BlockUntil)
			}
		}},
		{"429 HTTP-date", 429, hdr("Retry-After", "Tue, 01 Dec 2026 12:00:09 GMT"), true, func(t *testing.T, o Observation) {
			if !o.BlockUntil.Equal(now.Add(9 * time.Second)) {
				t.Errorf("block = %v", o.BlockUntil)
			}
		}},
		{"429 without Retry-After blocks briefly", 429, hdr(), true, func(t *testing.T, o Observation) {
			if !o.BlockUntil.Equal(now.Add(default429Block)) {
				t.Errorf("block = %v", o.BlockUntil)
			}
		}},
		{"429 absurd Retry-After is capped", 429, hdr("Retry-After", "99999999"), true, func(t *testing.T, o Observation) {
			if !o.BlockUntil.Equal(now.Add(maxBlock)) {
				t.Errorf("block = %v", o.BlockUntil)
			}
		}},
		{"Retry-After on a 200 is not a block", 200, hdr("Retry-After", "5"), false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, ok := Parse(tc.status, tc.h, now)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v (%+v)", ok, tc.ok, o)
			}
			if tc.check != nil {
				tc.check(t, o)
			}
		})
	}
}

// TestParseCappedHonoursTheConfiguredCap: LSPROXY_RATE_LIMIT_MAX_BLOCK
// bounds Retry-After, window resets and drip rates alike.
func TestParseCappedHonoursTheConfiguredCap(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	const limit = 10 * time.Minute
	h := http.Header{}
	h.Set("Retry-After", "3600")
	h.Set("X-RateLimit-Limit", "10")
	h.Set("X-RateLimit-Remaining", "0")
	h.Set("X-RateLimit-Reset", "9000000000")
	h.Set("X-LS-API-Bucket-Level", "60/60")
	h.Set("X-LS-API-Drip-Rate", "0.000001")
	o, ok := ParseCapped(http.StatusTooManyRequests, h, now, limit)
	if !ok || !o.BlockUntil.Equal(now.Add(limit)) || !o.WindowReset.Equal(now.Add(limit)) || o.DripRate < 60/limit.Seconds() {
		t.Fatalf("ParseCapped = %+v, %v; want every block within %v", o, ok, limit)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true}, {"3", 3 * time.Second, true}, {" 2.25 ", 2250 * time.Millisecond, true},
		{"Tue, 01 Dec 2026 11:59:00 GMT", 0, true}, // in the past
		{"Tuesday, 01-Dec-26 12:00:04 GMT", 4 * time.Second, true},
		{"", 0, false}, {"-1", 0, false}, {"soon", 0, false}, {"Inf", 0, false},
	} {
		got, ok := ParseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestCosts(t *testing.T) {
	if c := Costs(nil); c.Of("GET") != 1 || c.Of("POST") != 10 || c.Of("HEAD") != 1 {
		t.Errorf("default costs wrong: %v %v", c.Of("GET"), c.Of("POST"))
	}
	if c := (Costs{"*": 1}); c.Of("DELETE") != 1 {
		t.Errorf("flat costs wrong")
	}
	if c := (Costs{"GET": 2}); c.Of("PUT") != 1 {
		t.Errorf("costs without * should default to 1")
	}
}
