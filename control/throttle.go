package control

import (
	"math"
	"net"
	"net/http"
	"sync"
	"time"
)

// Throttling of wrong admin tokens, per client address, shared by the admin
// API and the console's sign-in: a client gets DefaultAdminAttempts wrong
// tokens at once, then one more every adminAttemptEvery; past that it is
// answered 429 too_many_attempts (with Retry-After) before its token is
// even compared. A right token costs nothing, so an operator who types it
// right is never slowed; a guessing client gets about 10 tries a minute.
const (
	// DefaultAdminAttempts is the burst of wrong tokens a client may send.
	DefaultAdminAttempts = 10
	// adminAttemptEvery is how often one more wrong token is allowed.
	adminAttemptEvery = 6 * time.Second
	// maxThrottled bounds the clients remembered; beyond it, clients whose
	// allowance is whole again are forgotten, then the oldest.
	maxThrottled = 10000
)

// attempts counts wrong admin tokens per client address (a token bucket
// per address). It is safe for concurrent use. The address is the TCP
// peer: behind a proxy every client shares the proxy's allowance, which
// errs on the side of safety (X-Forwarded-For is not trusted).
type attempts struct {
	now   func() time.Time
	burst float64
	mu    sync.Mutex
	m     map[string]*bucket
}

type bucket struct {
	left float64
	at   time.Time
}

func newAttempts(now func() time.Time) *attempts {
	return &attempts{now: now, burst: DefaultAdminAttempts, m: map[string]*bucket{}}
}

// clientAddr is the client's IP address (no port).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// refill brings b up to date; the caller holds a.mu.
func (a *attempts) refill(b *bucket, now time.Time) {
	b.left = math.Min(a.burst, b.left+float64(now.Sub(b.at))/float64(adminAttemptEvery))
	b.at = now
}

// blocked reports whether client has no wrong attempt left, and how long
// until it has one.
func (a *attempts) blocked(client string) (bool, time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, ok := a.m[client]
	if !ok {
		return false, 0
	}
	a.refill(b, a.now())
	if b.left >= 1 {
		return false, 0
	}
	return true, time.Duration((1 - b.left) * float64(adminAttemptEvery))
}

// failed books one wrong token of client.
func (a *attempts) failed(client string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	b, ok := a.m[client]
	if !ok {
		if len(a.m) >= maxThrottled {
			a.forget(now)
		}
		b = &bucket{left: a.burst, at: now}
		a.m[client] = b
	}
	a.refill(b, now)
	b.left = math.Max(0, b.left-1)
}

// forget drops clients whose allowance is whole again, else the one seen
// longest ago; the caller holds a.mu.
func (a *attempts) forget(now time.Time) {
	var oldest string
	var oldestAt time.Time
	for k, b := range a.m {
		a.refill(b, now)
		if b.left >= a.burst {
			delete(a.m, k)
			continue
		}
		if oldest == "" || b.at.Before(oldestAt) {
			oldest, oldestAt = k, b.at
		}
	}
	if len(a.m) >= maxThrottled {
		delete(a.m, oldest)
	}
}
