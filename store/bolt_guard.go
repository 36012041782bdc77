package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/bbolt"
)

var _ GuardState = (*Bolt)(nil)

// bucketGuard holds the mass-invalid_grant guard's state (GuardState):
// bucket "reverts" (tenant → 8-byte big-endian Unix nanoseconds, every
// scope's) and, per scope, bucket "scope:<scope>" with one nested bucket
// per map (rejected, flags, acquitted: tenant → Unix nanoseconds) and
// "state" (tripped, trips, last_new). The process keeps a copy in memory
// (the file is this process's alone) and writes every change through, in
// the transaction of the call that made it.
var bucketGuard = []byte("guard")

// guardDo runs fn on the guard's state and persists what it changed, in
// one transaction. On a failed transaction the copy is read again from
// the file, so memory never runs ahead of it.
func (b *Bolt) guardDo(ctx context.Context, scope string, fn func(g *guardMachine)) error {
	if err := errCtx(ctx); err != nil {
		return err
	}
	if !validGuardScope(scope) {
		return fmt.Errorf("store: invalid guard scope %q", scope)
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
	g := b.guard.of(scope)
	type change struct {
		kind, tenant string
		val          int64
		del          bool
	}
	var changes []change
	g.journal = func(kind, tenant string, val int64, del bool) {
		changes = append(changes, change{kind, tenant, val, del})
	}
	fn(g)
	g.journal = nil
	if len(changes) == 0 {
		return nil
	}
	err := b.db.Update(func(tx *bbolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketGuard)
		if err != nil {
			return err
		}
		sb, err := root.CreateBucketIfNotExists([]byte("scope:" + scope))
		if err != nil {
			return err
		}
		for _, c := range changes {
			parent := sb
			if c.kind == guardKindReverts {
				parent = root
			}
			bk, err := parent.CreateBucketIfNotExists([]byte(c.kind))
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
func (b *Bolt) loadGuard() (*guardScopes, error) {
	gs := newGuardScopes()
	read := func(bk *bbolt.Bucket, kind string, g *guardMachine) error {
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("corrupt guard entry %s/%q", kind, k)
			}
			n := int64(binary.BigEndian.Uint64(v))
			switch {
			case kind == guardKindReverts:
				gs.reverts[string(k)] = n
			case kind != guardKindState:
				g.mapOf(kind)[string(k)] = n
			case string(k) == "tripped":
				g.tripped = n == 1
			case string(k) == "trips":
				g.trips = uint64(n)
			case string(k) == "last_new":
				g.lastNew = n
			case string(k) == "last_grant":
				g.lastGrant = n
			case string(k) == "last_probe":
				g.lastProbe = n
			}
			return nil
		})
	}
	err := b.db.View(func(tx *bbolt.Tx) error {
		root := tx.Bucket(bucketGuard)
		if root == nil {
			return nil
		}
		if err := read(root.Bucket([]byte(guardKindReverts)), guardKindReverts, nil); err != nil {
			return err
		}
		return root.ForEachBucket(func(name []byte) error {
			scope, ok := strings.CutPrefix(string(name), "scope:")
			if !ok {
				return nil
			}
			sb, g := root.Bucket(name), gs.of(scope)
			for _, kind := range []string{guardKindRejected, guardKindFlags, guardKindAcquitted, guardKindState} {
				if err := read(sb.Bucket([]byte(kind)), kind, g); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: bolt guard state: %w", err)
	}
	return gs, nil
}

// GuardReject implements GuardState.
func (b *Bolt) GuardReject(ctx context.Context, tenant string, now time.Time, p GuardParams) (v GuardVerdict, err error) {
	err = b.guardDo(ctx, p.Scope, func(g *guardMachine) { v = g.reject(tenant, now, p) })
	return v, err
}

// GuardFlagged implements GuardState.
func (b *Bolt) GuardFlagged(ctx context.Context, tenant string, at time.Time, trips uint64, p GuardParams) (ok bool, err error) {
	err = b.guardDo(ctx, p.Scope, func(g *guardMachine) { ok = g.flagged(tenant, at, trips, at, p) })
	return ok, err
}

// GuardStatus implements GuardState.
func (b *Bolt) GuardStatus(ctx context.Context, tenant string, now time.Time, p GuardParams) (s GuardStatus, err error) {
	err = b.guardDo(ctx, p.Scope, func(g *guardMachine) { s = g.status(tenant, now, p) })
	return s, err
}

// GuardReverted implements GuardState.
func (b *Bolt) GuardReverted(ctx context.Context, tenant string, at time.Time) error {
	return b.guardDo(ctx, "", func(g *guardMachine) { g.reverted(tenant, at) }) // reverts are every scope's
}

// GuardGranted implements GuardState.
func (b *Bolt) GuardGranted(ctx context.Context, tenant string, now time.Time, p GuardParams) error {
	return b.guardDo(ctx, p.Scope, func(g *guardMachine) { g.granted(tenant, now) })
}
