package auth

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"
)

// aimdLimit is the background refresher's adaptive concurrency: additive
// increase while the token endpoint answers well (the limit grows by one
// per limit's worth of good answers), multiplicative decrease (halved, at
// most once per cooldown) when it strains: a 429, a 5xx, no answer, the
// pacer's or the breaker's refusal, or an answer slower than slow. It
// hears every token request of its manager (Manager.observeEndpoint): a
// failed background refresh often looks like success to its caller (the
// still-valid token is served). The limit stays within 1 and max. Safe
// for concurrent use.
type aimdLimit struct {
	mu       sync.Mutex
	max      int
	limit    float64
	inflight int
	slow     time.Duration
	cooldown time.Duration
	lastCut  time.Time
	changed  chan struct{} // closed (and replaced) when a slot may be free
	now      func() time.Time
	onChange func(limit int) // called (under mu) when the whole limit changes; may be nil
}

func newAIMD(max int, slow time.Duration, now func() time.Time) *aimdLimit {
	return &aimdLimit{max: max, limit: float64(max), slow: slow, cooldown: slow, changed: make(chan struct{}), now: now}
}

// current is the limit in whole refreshes (under mu).
func (a *aimdLimit) current() int { return max(1, int(a.limit)) }

// Limit returns the current limit.
func (a *aimdLimit) Limit() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.current()
}

// acquire waits for a slot; false if ctx ended first.
func (a *aimdLimit) acquire(ctx context.Context) bool {
	for {
		a.mu.Lock()
		if a.inflight < a.current() {
			a.inflight++
			a.mu.Unlock()
			return true
		}
		ch := a.changed
		a.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// release frees a slot.
func (a *aimdLimit) release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inflight--
	close(a.changed)
	a.changed = make(chan struct{})
}

// observe adapts the limit to one token request's outcome (or refusal)
// and latency: every one this replica sends, the request path's included.
func (a *aimdLimit) observe(err error, took time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	before := a.current()
	defer func() {
		if now := a.current(); now != before && a.onChange != nil {
			a.onChange(now)
		}
	}()
	switch {
	case strained(err) || took > a.slow:
		if now := a.now(); a.lastCut.IsZero() || now.Sub(a.lastCut) >= a.cooldown {
			a.limit = max(1, a.limit/2)
			a.lastCut = now
		}
	case err == nil:
		a.limit = min(float64(a.max), a.limit+1/a.limit)
	}
	close(a.changed)
	a.changed = make(chan struct{})
}

// strained reports an error that says the token endpoint is overloaded
// or unreachable (rather than about one tenant).
func strained(err error) bool {
	if err == nil {
		return false
	}
	var ee *EndpointError
	if errors.As(err, &ee) {
		return ee.Status == http.StatusTooManyRequests || ee.Status >= 500
	}
	return errors.Is(err, ErrPaced) || errors.Is(err, ErrBreakerOpen) || errors.Is(err, ErrOutcomeUnknown) ||
		errors.Is(err, context.DeadlineExceeded)
}
