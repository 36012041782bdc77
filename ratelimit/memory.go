package ratelimit

import (
	"context"
	"math"
	"sync"
	"time"
)

// Memory is a Backend for one process (the embedded store). It follows the
// same rules as the Redis script (lua/take.lua); the tests run both.
// Safe for concurrent use.
type Memory struct {
	mu      sync.Mutex
	tenants map[string]*budgetState
	takes   int
}

var _ Backend = (*Memory)(nil)

// NewMemory returns an empty Memory backend.
func NewMemory() *Memory { return &Memory{tenants: make(map[string]*budgetState)} }

// sweepEvery: every so many Takes, expired budgets are dropped, so memory
// stays bounded by the tenants active within idleTTL.
const sweepEvery = 4096

// Take implements Backend. It never fails.
func (m *Memory) Take(_ context.Context, tenant string, req Request) (Decision, error) {
	now := msOf(req.Now)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.takes++
	if m.takes%sweepEvery == 0 {
		for id, s := range m.tenants {
			if s.expires <= now {
				delete(m.tenants, id)
			}
		}
	}
	s := m.tenants[tenant]
	if s != nil && s.expires <= now {
		s = nil
	}
	if s == nil {
		if req.Observe == nil || req.Observe.Empty() {
			return Decision{Allowed: true}, nil
		}
		s = &budgetState{t: now}
		m.tenants[tenant] = s
	}
	d := s.take(now, req)
	return d, nil
}

// Clear implements Backend. It never fails.
func (m *Memory) Clear(_ context.Context, tenant string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.tenants, tenant)
	return nil
}

// budgetState is one tenant's budget. Times are Unix milliseconds as
// float64, like the Lua script's numbers.
type budgetState struct {
	size, drip, lvl, t float64 // bucket
	wl, wu, wr         float64 // window
	blk                float64 // block until
	e, b1, b0          float64 // bookings this and last second (see take.lua)
	keys               map[string]*keyState
	expires            float64
}

type keyState struct{ lvl, t, wu, wr float64 }

func msOf(t time.Time) float64 { return float64(t.UnixNano()) / 1e6 }

func timeOf(ms float64) time.Time { return time.UnixMilli(0).Add(time.Duration(ms * 1e6)) }

// take is lua/take.lua in Go; keep the two in step.
func (s *budgetState) take(now float64, req Request) Decision {
	if s.size > 0 {
		s.lvl = math.Max(0, s.lvl-s.drip*(now-s.t)/1000)
	}
	s.t = now
	if s.wl > 0 && now >= s.wr {
		s.wl, s.wu, s.wr = 0, 0, 0
	}
	if now >= s.e+1000 {
		if now >= s.e+2000 {
			s.b0 = 0
		} else {
			s.b0 = s.b1
		}
		s.b1, s.e = 0, now-math.Mod(now, 1000)
	}
	if o := req.Observe; o != nil {
		at := msOf(o.At)
		missed := 0.0
		if o.Unpaced {
			missed = s.b1
			if msOf(o.SentAt) < s.e {
				missed += s.b0
			}
		}
		if o.BucketSize > 0 {
			s.size, s.drip = o.BucketSize, o.DripRate
			if reported := o.BucketUsed - s.drip*math.Max(0, now-at)/1000 + missed; reported > s.lvl {
				s.lvl = reported
			}
		}
		if o.WindowLimit > 0 {
			owr, used := msOf(o.WindowReset), o.WindowLimit-o.WindowRemaining+missed
			if owr > now {
				if s.wl == 0 || owr > s.wr+1000 {
					s.wu, s.wr = used, owr
				} else {
					s.wu, s.wr = math.Max(s.wu, used), math.Max(s.wr, owr)
				}
				s.wl = o.WindowLimit
			}
		}
		if b := msOf(o.BlockUntil); !o.BlockUntil.IsZero() && b > s.blk {
			s.blk = b
		}
	}

	allowed, wait, granted := true, 0.0, 0.0
	deny := func(ms float64) {
		allowed = false
		wait = math.Max(wait, ms)
	}
	if s.blk > now {
		deny(s.blk - now)
	}
	cost := req.Cost
	shared := req.Key != "" && req.Share > 0 && req.Share < 1
	var k *keyState
	if shared && (s.size > 0 || s.wl > 0) {
		if s.keys == nil {
			s.keys = make(map[string]*keyState)
		}
		if k = s.keys[req.Key]; k == nil {
			k = &keyState{t: now}
			s.keys[req.Key] = k
		}
		if s.size > 0 {
			k.lvl = math.Max(0, k.lvl-s.drip*req.Share*(now-k.t)/1000)
		}
		k.t = now
		if k.wr != s.wr {
			k.wu, k.wr = 0, s.wr
		}
	}
	if ret := req.Return; ret > 0 {
		rw := 0.0
		if !req.ReturnWindow.IsZero() {
			rw = msOf(req.ReturnWindow)
		}
		sameWin := s.wl > 0 && rw > 0 && math.Abs(rw-s.wr) < 1
		if s.size > 0 {
			s.lvl = math.Max(0, s.lvl-ret)
		}
		if sameWin {
			s.wu = math.Max(0, s.wu-ret)
		}
		if k != nil {
			if s.size > 0 {
				k.lvl = math.Max(0, k.lvl-ret)
			}
			if sameWin {
				k.wu = math.Max(0, k.wu-ret)
			}
		}
	}
	if cost > 0 {
		if s.size > 0 {
			if need := s.lvl + cost - s.size; need > 0 && s.lvl > 0 {
				deny(need / s.drip * 1000)
			}
			if k != nil {
				ks, kd := s.size*req.Share, s.drip*req.Share
				if need := k.lvl + cost - ks; need > 0 && k.lvl > 0 {
					deny(need / kd * 1000)
				}
			}
		}
		if s.wl > 0 {
			if s.wu+cost > s.wl {
				deny(s.wr - now)
			}
			if k != nil && k.wu+cost > s.wl*req.Share {
				deny(s.wr - now)
			}
		}
		if allowed {
			granted = cost
			if req.Want > cost && (s.size > 0 || s.wl > 0) {
				g := req.Want
				fit := func(capacity, used float64) {
					g = math.Min(g, math.Max(cost, math.Min((capacity-used)/2, capacity/8)))
				}
				if s.size > 0 {
					fit(s.size, s.lvl)
				}
				if s.wl > 0 {
					fit(s.wl, s.wu)
				}
				if k != nil {
					if s.size > 0 {
						fit(s.size*req.Share, k.lvl)
					}
					if s.wl > 0 {
						fit(s.wl*req.Share, k.wu)
					}
				}
				granted = g
			}
			if s.size > 0 {
				s.lvl += granted
			}
			if s.wl > 0 {
				s.wu += granted
			}
			if k != nil {
				k.lvl += granted
				k.wu += granted
			}
			s.b1 += granted
		}
	}
	until := math.Max(s.blk, s.wr)
	if s.size > 0 && s.drip > 0 {
		until = math.Max(until, now+s.lvl/s.drip*1000)
	}
	s.expires = math.Max(until, now) + float64(idleTTL.Milliseconds())
	return Decision{Allowed: allowed, RetryIn: time.Duration(math.Ceil(wait)) * time.Millisecond, Budget: s.budget(now), Granted: granted}
}

func (s *budgetState) budget(now float64) Budget {
	var b Budget
	switch {
	case s.size > 0:
		b.Kind, b.Level, b.Size, b.DripRate = "bucket", s.lvl, s.size, s.drip
	case s.wl > 0:
		b.Kind, b.Limit, b.Used = "window", s.wl, s.wu
	}
	if s.wl > 0 {
		b.Limit, b.Used = s.wl, s.wu
		t := timeOf(s.wr).UTC()
		b.ResetAt = &t
	}
	if s.blk > now {
		t := timeOf(s.blk).UTC()
		b.BlockedUntil = &t
	}
	return b
}
