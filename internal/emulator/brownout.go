package emulator

import (
	"math/rand/v2"
	"time"
)

// Brownout describes a degraded token endpoint, the kind a provider shows
// for minutes at a time: every answer is slow, some stretches answer 503,
// and the grants it does make are committed before the slow answer leaves,
// so a client that stops waiting loses a rotated refresh token.
type Brownout struct {
	// MinLatency and MaxLatency: every token request is answered after a
	// uniformly random wait in [MinLatency, MaxLatency] (MaxLatency below
	// MinLatency counts as MinLatency). A successful grant is processed —
	// the refresh token rotated — before the wait, like a provider whose
	// database commits before its slow front end answers; a client that
	// goes away during the wait loses the grant (Stats.TokenAbandoned and
	// Stats.GrantsLost). Rejections (invalid_grant, invalid_client, ...)
	// are answered without the wait.
	MinLatency, MaxLatency time.Duration
	// BurstEvery and BurstFor: the first BurstFor of every BurstEvery,
	// counted from SetTokenBrownout, answers 503 after the wait, without
	// processing the request (Stats.TokenOutages). BurstEvery 0 = no bursts.
	BurstEvery, BurstFor time.Duration
}

// SetTokenBrownout puts the token endpoint into brownout b; the zero
// Brownout ends it. It combines with SetTokenDelay, SetTokenHold and
// SetTokenOutage (the delay comes first, an outage answers before the
// brownout, the longer of hold and brownout wait applies to a grant).
// Delays and bursts use real time, not Config.Now.
func (e *Emulator) SetTokenBrownout(b Brownout) {
	e.mu.Lock()
	e.brownout = b
	e.brownoutFrom = time.Now()
	e.mu.Unlock()
}

// brownoutNow returns this request's brownout wait and whether it falls in
// a 503 burst.
func (e *Emulator) brownoutNow() (wait time.Duration, burst bool) {
	e.mu.Lock()
	b, from := e.brownout, e.brownoutFrom
	e.mu.Unlock()
	wait = b.MinLatency
	if b.MaxLatency > b.MinLatency {
		wait += rand.N(b.MaxLatency - b.MinLatency)
	}
	if b.BurstEvery > 0 && b.BurstFor > 0 {
		burst = time.Since(from)%b.BurstEvery < b.BurstFor
	}
	return wait, burst
}
