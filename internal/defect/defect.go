// Package defect holds switches that reintroduce, one at a time, a defect the
// refresh protocol once had (docs/reliability.md, "What the simulation
// catches"). The schedule-exploring simulation turns one on and must then
// find a schedule that breaks an invariant: that is how we know it would
// have caught the defect.
//
// Every switch is off unless a test turns it on; production code only reads
// them, at points that are not on the request hot path. Reads and writes are
// atomic, but a test that sets a switch must not run in parallel with other
// tests of the same binary.
package defect

import (
	"fmt"
	"sync/atomic"
)

// Defect names one reintroducible defect. The numbers follow the second fault
// review's list.
type Defect int

const (
	// PacingInsideTimeout (1): the token endpoint's rate-budget wait counts
	// against the request's token_timeout.
	PacingInsideTimeout Defect = iota + 1
	// TakeoverIgnoresSend (2): a successor's takeover does not wait out a
	// holder's outstanding token request (no lease covering the send).
	TakeoverIgnoresSend
	// NoLeaseCheckBeforeSend (3): the holder sends without renewing and
	// checking its lease right before the send.
	NoLeaseCheckBeforeSend
	// ZeroReplicasAcked (4): a mark whose WAIT fell short counts as
	// acknowledged when the master then reports 0 replicas.
	ZeroReplicasAcked
	// ShutdownLateSend (5): a refresh started while closing sends with less
	// than token_timeout of the shutdown budget left.
	ShutdownLateSend
	// AdminPutIgnoresMark (6): PUT /admin/tenants/{id} overwrites a record
	// while a refresh is in flight.
	AdminPutIgnoresMark
	// RekeyVersionOnly (7): rekey fences on the version, not the write id.
	RekeyVersionOnly
	// GuardInProcess (8): the mass-invalid_grant guard's window and
	// revertible flags live only in the process.
	GuardInProcess
	// GuardRevertOnce (9): a failed guard revert is not retried.
	GuardRevertOnce
	// TrustFlaggedForever (10): a cached flagged answer is trusted past
	// cache_ttl after its change notification may have been lost.
	TrustFlaggedForever
	// GuardRenewedByResend (11): re-sending a held tenant renews the guard's
	// window, so it never clears.
	GuardRenewedByResend
	// WallClockTakeover (12): takeover compares the holder's wall-clock mark
	// time with the successor's clock.
	WallClockTakeover

	numDefects
)

var on [numDefects]atomic.Bool

// On reports whether d is switched on. It is false in production.
func On(d Defect) bool { return d > 0 && d < numDefects && on[d].Load() }

// Enable switches d on and returns the function that switches it off again.
func Enable(d Defect) (restore func()) {
	if d <= 0 || d >= numDefects {
		panic(fmt.Sprintf("defect: unknown defect %d", int(d)))
	}
	on[d].Store(true)
	return func() { on[d].Store(false) }
}

// All lists every defect, in order.
func All() []Defect {
	out := make([]Defect, 0, numDefects-1)
	for d := Defect(1); d < numDefects; d++ {
		out = append(out, d)
	}
	return out
}

var names = [numDefects]string{"", "PacingInsideTimeout", "TakeoverIgnoresSend", "NoLeaseCheckBeforeSend",
	"ZeroReplicasAcked", "ShutdownLateSend", "AdminPutIgnoresMark", "RekeyVersionOnly", "GuardInProcess",
	"GuardRevertOnce", "TrustFlaggedForever", "GuardRenewedByResend", "WallClockTakeover"}

func (d Defect) String() string {
	if d <= 0 || d >= numDefects {
		return fmt.Sprintf("Defect(%d)", int(d))
	}
	return fmt.Sprintf("%s (%d)", names[d], int(d))
}
