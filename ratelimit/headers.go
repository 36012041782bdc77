package ratelimit

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names lsproxy learns budgets from (docs/lightspeed.md cites the
// sources). Header lookups are case-insensitive; these are canonical forms.
const (
	HeaderBucketLevel = "X-Ls-Api-Bucket-Level" // R-Series: "used/size", decimals allowed
	HeaderDripRate    = "X-Ls-Api-Drip-Rate"    // R-Series: units drained per second
	HeaderLimit       = "X-Ratelimit-Limit"     // X-Series: requests per window
	HeaderRemaining   = "X-Ratelimit-Remaining" // X-Series: requests left in the window
	HeaderReset       = "X-Ratelimit-Reset"     // window end: epoch seconds, delta seconds or HTTP-date
	HeaderRetryAfter  = "Retry-After"           // on a 429: delta-seconds or HTTP-date
)

// DefaultMaxBlock caps every block learned from one answer, whatever header
// taught it (Retry-After, an X-RateLimit-Reset in the far future, a drip
// rate close to zero): Governor.MaxBlock's default (SPEC §3 rule 18).
const DefaultMaxBlock = time.Hour

// Bounds that keep a malformed or hostile header from parking a tenant.
const (
	// maxBlock caps ParseRetryAfter.
	maxBlock = DefaultMaxBlock
	// default429Block is the block after a 429 without a usable Retry-After.
	default429Block = time.Second
	// defaultDrip is R-Series' documented default drain rate, used when a
	// bucket level comes without a drip rate.
	defaultDrip = 1.0
	// windowHorizon is assumed for a window whose reset is not reported: the
	// estimate is dropped after it rather than trusted forever.
	windowHorizon = time.Minute
)

// Observation is what one upstream answer says about a tenant's budget.
// The zero value says nothing.
type Observation struct {
	// At is when the answer arrived; SentAt, when known, is when its
	// request was sent. Unpaced: it was sent before this process knew the
	// tenant's budget, so it was not booked.
	At, SentAt time.Time
	Unpaced    bool
	// BucketSize > 0: a leaky bucket holding BucketUsed of BucketSize units,
	// draining DripRate units per second.
	BucketUsed, BucketSize, DripRate float64
	// WindowLimit > 0: a fixed window allowing WindowLimit requests with
	// WindowRemaining left until WindowReset.
	WindowLimit, WindowRemaining float64
	WindowReset                  time.Time
	// BlockUntil, when set, is when a 429's Retry-After allows requests again.
	BlockUntil time.Time
}

// Empty reports whether o carries no budget information.
func (o Observation) Empty() bool {
	return o.BucketSize <= 0 && o.WindowLimit <= 0 && o.BlockUntil.IsZero()
}

// Parse reads the budget headers of an upstream answer with status, received
// at now. ok is false when the answer says nothing about a budget: the
// common case for upstreams that report none, decided with a few map
// lookups and no allocation. Every block it learns is capped at
// DefaultMaxBlock (see ParseCapped).
func Parse(status int, h http.Header, now time.Time) (o Observation, ok bool) {
	return ParseCapped(status, h, now, DefaultMaxBlock)
}

// ParseCapped is Parse with every learned block capped at maxCap (0 or less
// means DefaultMaxBlock): a Retry-After, a window reset (absolute or not)
// no later than now + maxCap, and a drip rate no slower than one that
// drains a full bucket within maxCap.
func ParseCapped(status int, h http.Header, now time.Time, maxCap time.Duration) (o Observation, ok bool) {
	if maxCap <= 0 {
		maxCap = DefaultMaxBlock
	}
	o.At = now
	if v := first(h, HeaderBucketLevel); v != "" {
		if used, size, good := parseLevel(v); good {
			o.BucketUsed, o.BucketSize, o.DripRate = min(used, size), size, defaultDrip
			if d, err := parseNumber(first(h, HeaderDripRate)); err == nil && d > 0 {
				o.DripRate = d
			}
			// A full bucket drains within maxCap, however slow the
			// reported rate (1e-12 would park the tenant for ages).
			o.DripRate = max(o.DripRate, size/maxCap.Seconds())
		}
	}
	if v := first(h, HeaderLimit); v != "" {
		limit, err1 := parseNumber(v)
		rem, err2 := parseNumber(first(h, HeaderRemaining))
		if err1 == nil && err2 == nil && limit > 0 && rem >= 0 {
			o.WindowLimit, o.WindowRemaining = limit, math.Min(rem, limit)
			o.WindowReset = parseReset(first(h, HeaderReset), now)
			if o.WindowReset.IsZero() {
				o.WindowReset = now.Add(windowHorizon)
			}
			if limit := now.Add(maxCap); o.WindowReset.After(limit) {
				o.WindowReset = limit // e.g. an epoch of 9000000000 (the year 2255)
			}
		}
	}
	if status == http.StatusTooManyRequests {
		d, good := ParseRetryAfter(first(h, HeaderRetryAfter), now)
		if !good {
			d = default429Block
		}
		o.BlockUntil = now.Add(min(d, maxCap))
	}
	return o, !o.Empty()
}

// ParseRetryAfter reads a Retry-After value (RFC 9110 §10.2.3: delta-seconds
// or an HTTP-date; decimal seconds are accepted too) as a wait from now,
// capped at one hour. ok is false for an empty or unreadable value; a date
// in the past gives 0 and ok.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if n, err := parseNumber(v); err == nil {
		if n < 0 {
			return 0, false
		}
		d = time.Duration(math.Min(n, maxBlock.Seconds()) * float64(time.Second))
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return 0, false
	}
	return min(max(d, 0), maxBlock), true
}

// parseReset reads X-RateLimit-Reset: epoch seconds (or milliseconds),
// seconds from now, an HTTP-date or RFC 3339. Zero when unreadable.
func parseReset(v string, now time.Time) time.Time {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}
	}
	if n, err := parseNumber(v); err == nil && n >= 0 {
		switch {
		case n > 1e12:
			return time.UnixMilli(int64(n))
		case n > 1e9:
			return time.Unix(0, int64(n*1e9))
		default:
			return now.Add(time.Duration(math.Min(n, maxBlock.Seconds()) * float64(time.Second)))
		}
	}
	if t, err := http.ParseTime(v); err == nil {
		return t
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t
	}
	return time.Time{}
}

// parseLevel reads "used/size" with decimals allowed.
func parseLevel(v string) (used, size float64, ok bool) {
	a, b, found := strings.Cut(v, "/")
	if !found {
		return 0, 0, false
	}
	used, err1 := parseNumber(a)
	size, err2 := parseNumber(b)
	if err1 != nil || err2 != nil || size <= 0 || used < 0 {
		return 0, 0, false
	}
	return used, size, true
}

// parseNumber is strconv.ParseFloat that refuses NaN, Inf and absurd values.
func parseNumber(v string) (float64, error) {
	n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil {
		return 0, err
	}
	if math.IsNaN(n) || math.IsInf(n, 0) || n > 1e15 {
		return 0, strconv.ErrRange
	}
	return n, nil
}

func first(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}
