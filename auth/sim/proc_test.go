package sim

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"
)

// proc is one process (an incarnation of a replica slot): its faults as
// the fakes see them. A restart makes a new proc; the old one stays dead,
// so goroutines it left behind stay without effect.
type proc struct {
	w    *world
	slot int
	inc  int
	name string // "r1#2": slot 1, second incarnation
	skew time.Duration
	// misconfigured: its client credentials are wrong (every token
	// request is answered invalid_grant without consuming anything).
	misconfigured bool
	rt            *procRuntime // set before the process runs

	mu           sync.Mutex
	dead         bool
	exitCause    string // "kill" or "shutdown"
	diedAt       time.Time
	stalledUntil time.Time // the end of its last answer stall
	paused       bool
	part         faultKind // store partition mode, faultNone when healed
	flaky        float64   // probability a store call fails
	changed      chan struct{}
	callSeq      uint64
	contacts     []time.Time // when its store calls got answers, in order
	answered     string      // the tenant whose grant's answer reached it last
	answeredSent time.Time   // when that grant's request was sent
	// nParts and nPauses count overlapping partitions and pauses: the
	// fault ends when the last one does.
	nParts, nPauses int
}

type faultKind int

const (
	faultNone faultKind = iota
	faultFail
	faultHang
	faultLoseReply
)

func (f faultKind) String() string {
	return [...]string{"none", "fail", "hang", "lose-reply"}[f]
}

func newProc(w *world, slot, inc int, skew time.Duration) *proc {
	return &proc{w: w, slot: slot, inc: inc, name: procName(slot, inc), skew: skew, changed: make(chan struct{})}
}

func procName(slot, inc int) string {
	return "r" + strconv.Itoa(slot) + "#" + strconv.Itoa(inc)
}

// now is the process's wall clock (skewed).
func (p *proc) now() time.Time { return time.Now().Add(p.skew) }

// set changes the process's state under its lock and wakes its waiters.
func (p *proc) set(f func()) {
	p.mu.Lock()
	f()
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// gate holds a paused process's call until the pause ends, and ends the
// goroutine of a dead process (runtime.Goexit: its effects are dropped,
// deferred calls run and are dropped the same way).
func (p *proc) gate() {
	for {
		p.mu.Lock()
		dead, paused, ch := p.dead, p.paused, p.changed
		p.mu.Unlock()
		if dead {
			runtime.Goexit()
		}
		if !paused {
			return
		}
		<-ch
	}
}

// storeFault decides the fault of one store call.
func (p *proc) storeFault(op, key string) faultKind {
	p.mu.Lock()
	part, flaky := p.part, p.flaky
	p.callSeq++
	seq := p.callSeq
	p.mu.Unlock()
	if part != faultNone {
		return part
	}
	if flaky > 0 && p.w.chance(flaky, "flaky", p.name, op, key, seq) {
		return faultFail
	}
	return faultNone
}

var errPartitionCtx = errors.New("sim: store call timed out (partition)")

// waitHealed waits until the partition heals (nil) or ctx ends (its error);
// a pause or death in between is honoured.
func (p *proc) waitHealed(ctx context.Context) error {
	for {
		p.mu.Lock()
		dead, part, ch := p.dead, p.part, p.changed
		p.mu.Unlock()
		if dead {
			runtime.Goexit()
		}
		if part == faultNone {
			p.gate()
			return nil
		}
		select {
		case <-ctx.Done():
			p.gate()
			return errors.Join(errPartitionCtx, ctx.Err())
		case <-ch:
		}
	}
}

func (p *proc) isDead() (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dead, p.exitCause
}

// contact records a store call that reached the store and whose answer
// the process received.
func (p *proc) contact() {
	p.mu.Lock()
	p.contacts = append(p.contacts, time.Now())
	p.mu.Unlock()
}

// cutThrough reports whether the process could not reach the store during
// all of [from, until]: no call of its got an answer then.
func (p *proc) cutThrough(from, until time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	i, _ := slices.BinarySearchFunc(p.contacts, from, func(a, b time.Time) int { return a.Compare(b) })
	return i == len(p.contacts) || p.contacts[i].After(until)
}
