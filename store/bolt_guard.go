package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

var _ GuardState = (*Bolt)(nil)

// bucketGuard holds the mass-invalid_grant guard's state (GuardState): one
// nested bucket per map (rejected, flags, reverts, acquitted: tenant →
// 8-byte big-endian Unix nanoseconds) and "state" (tripped, trips,
// last_new). The process keeps a copy in memory (the file is this
// process's alone) and writes every change through, in the transaction
// of the call that made it.
var bucketGuard = []byte("guard")

// guardDo runs fn on the guard's state and persists what it changed, in
// one transaction. On a failed transaction the copy is read again from
// the file, so memory never runs ahead of it.
func (b *Bolt) guardDo(ctx context.Context, fn func(g *guardMachine)) error {
	if err := errCtx(ctx); err != nil {
		return err
	}
	b.guardMu.Lock()
	defer b.guardMu.Unlock()
	if b.guard == nil {
		g, err := b.loadGuard()
		if err != nil {
			return err
		}
		b.guard = g
	}
	type change struct {
		kind, tenant string
		val          int64
		del          bool
	}
	var changes []change
	b.guard.journal = func(kind, tenant string, val int64, del bool) {
		changes = append(changes, change{kind, tenant, val, del})
	}
	fn(b.guard)
	b.guard.journal = nil
	if len(changes) == 0 {
		return nil
	}
	err := b.db.Update(func(tx *bbolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketGuard)
		if err != nil {
			return err
		}
		for _, c := range changes {
			bk, err := root.CreateBucketIfNotExists([]byte(c.kind))
			if err != nil {
				return err
			}
			if c.del {
				err = bk.Delete([]byte(c.tenant))
			} else {
				var v [8]byte
				binary.BigEndian.PutUint64(v[:], uint64(c.val))
				err = bk.Put([]byte(c.tenant), v[:])
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.guard = nil // read again from the file next time
		return fmt.Errorf("store: bolt guard state: %w", err)
	}
	return nil
}

// loadGuard reads the guard's state from the file.
func (b *Bolt) loadGuard() (*guardMachine, error) {
	g := newGuardMachine()
	err := b.db.View(func(tx *bbolt.Tx) error {
		root := tx.Bucket(bucketGuard)
		if root == nil {
			return nil
		}
		for _, kind := range []string{guardKindRejected, guardKindFlags, guardKindReverts, guardKindAcquitted, guardKindState} {
			bk := root.Bucket([]byte(kind))
			if bk == nil {
				continue
			}
			err := bk.ForEach(func(k, v []byte) error {
				if len(v) != 8 {
					return fmt.Errorf("corrupt guard entry %s/%q", kind, k)
				}
				n := int64(binary.BigEndian.Uint64(v))
				if kind != guardKindState {
					g.mapOf(kind)[string(k)] = n
					return nil
				}
				switch string(k) {
				case "tripped":
					g.tripped = n == 1
				case "trips":
					g.trips = uint64(n)
				case "last_new":
					g.lastNew = n
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: bolt guard state: %w", err)
	}
	return g, nil
}

// GuardReject implements GuardState.
func (b *Bolt) GuardReject(ctx context.Context, tenant string, now time.Time, p GuardParams) (v GuardVerdict, err error) {
	err = b.guardDo(ctx, func(g *guardMachine) { v = g.reject(tenant, now, p) })
	return v, err
}

// GuardFlagged implements GuardState.
func (b *Bolt) GuardFlagged(ctx context.Context, tenant string, at time.Time, trips uint64, p GuardParams) (ok bool, err error) {
	err = b.guardDo(ctx, func(g *guardMachine) { ok = g.flagged(tenant, at, trips, at, p) })
	return ok, err
}

// GuardStatus implements GuardState.
func (b *Bolt) GuardStatus(ctx context.Context, tenant string, now time.Time, p GuardParams) (s GuardStatus, err error) {
	err = b.guardDo(ctx, func(g *guardMachine) { s = g.status(tenant, now, p) })
	return s, err
}

// GuardReverted implements GuardState.
func (b *Bolt) GuardReverted(ctx context.Context, tenant string, at time.Time) error {
	return b.guardDo(ctx, func(g *guardMachine) { g.reverted(tenant, at) })
}

// GuardGranted implements GuardState.
func (b *Bolt) GuardGranted(ctx context.Context, tenant string) error {
	return b.guardDo(ctx, func(g *guardMachine) { g.granted(tenant) })
}
