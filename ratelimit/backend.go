package ratelimit

import (
	"context"
	"errors"
	"time"
)

// ErrStore wraps a failure of the budget store. The governor fails open on
// it (the request is sent): a store outage must not stop traffic the
// upstream would accept.
var ErrStore = errors.New("ratelimit: budget store unavailable")

// Backend keeps every tenant's budget where all replicas see it.
//
// Implementations must be safe for concurrent use, and Take must be atomic
// per tenant: the observation, the block check, the budget check and the
// booking happen as one step, so two replicas can never both book the last
// unit. Redis (one Lua script, one round trip) and Memory (one process)
// implement it.
type Backend interface {
	// Take first merges req.Observe into the tenant's state (the larger of
	// the own estimate and the reported level wins), then, when req.Cost >
	// 0, checks the block and the budget and books req.Cost if it fits.
	// Cost 0 only merges and reports. Errors wrap ErrStore.
	Take(ctx context.Context, tenant string, req Request) (Decision, error)
	// Clear forgets everything learned about tenant's budget (an operator
	// reset); a tenant with nothing learned is no error. Errors wrap
	// ErrStore.
	Clear(ctx context.Context, tenant string) error
}

// Request is one Take.
type Request struct {
	Now  time.Time
	Cost float64
	// Key and Share, when Key != "" and 0 < Share < 1, also hold the caller
	// key to Share of the tenant's budget.
	Key   string
	Share float64
	// Observe, when not nil, is merged before the check.
	Observe *Observation
	// Want, when above Cost, asks for a lease (lease.go): when the request
	// fits, up to Want units are booked at once, at least Cost, at most half
	// the room left and an eighth of the budget (of the key's share too). A
	// budget that is only a block leases nothing. 0 means Cost.
	Want float64
	// Return gives back unsent units of an earlier lease, after the merge
	// and before the check (a level never drops below zero). Window units
	// go back only to the window the lease was granted in, ReturnWindow
	// (zero: none).
	Return       float64
	ReturnWindow time.Time
}

// Decision is Take's answer.
type Decision struct {
	// Allowed: the request may be sent now (its cost is booked). Always
	// true for a tenant whose budget is not known.
	Allowed bool
	// RetryIn, when not Allowed, is how long until the request would fit
	// (or the block ends), as far as the store knows now.
	RetryIn time.Duration
	// Budget is the state after the step.
	Budget Budget
	// Granted, when Allowed and the budget is known, is the units booked:
	// Cost, or more when Want asked for a lease.
	Granted float64
}

// Budget is a tenant's last known budget, as shown by the admin API.
type Budget struct {
	// Kind is "bucket" (R-Series), "window" (X-Series) or "" (only a block,
	// or nothing known).
	Kind string `json:"kind,omitempty"`
	// Bucket: Level of Size units used, draining DripRate per second.
	Level    float64 `json:"level,omitempty"`
	Size     float64 `json:"size,omitempty"`
	DripRate float64 `json:"drip_rate,omitempty"`
	// Window: Used of Limit requests until ResetAt.
	Limit   float64    `json:"limit,omitempty"`
	Used    float64    `json:"used,omitempty"`
	ResetAt *time.Time `json:"reset_at,omitempty"`
	// BlockedUntil is set while an upstream 429's Retry-After holds.
	BlockedUntil *time.Time `json:"blocked_until,omitempty"`
}

// Known reports whether anything is known about the budget.
func (b Budget) Known() bool { return b.Kind != "" || b.BlockedUntil != nil }

// idleTTL is how long a budget is kept after it is full again (or its block
// or window ended): long enough to span quiet spells, short enough that a
// tenant that stopped reporting a limit is forgotten.
const idleTTL = 10 * time.Minute
