package store

import (
	"context"
	"fmt"
	"time"
)

// Named locks of a Bolt store: held in memory (one process holds the
// file), each with a random owner token and an expiry on b.now.

var _ Lock = (*boltLock)(nil)

// maxIdleLocks is how many lock entries may accumulate before TryLock
// sweeps expired ones.
const maxIdleLocks = 1024

type boltLockEntry struct {
	owner   string
	expires time.Time
}

// TryLock takes the named in-memory lock for ttl or returns ErrLockHeld.
func (b *Bolt) TryLock(ctx context.Context, name string, ttl time.Duration) (Lock, error) {
	if err := errCtx(ctx); err != nil {
		return nil, err
	}
	owner, err := newLockOwner(name, ttl)
	if err != nil {
		return nil, err
	}
	b.lockMu.Lock()
	defer b.lockMu.Unlock()
	now := b.now()
	if e, ok := b.locks[name]; ok && now.Before(e.expires) {
		return nil, fmt.Errorf("%w: %q", ErrLockHeld, name)
	}
	if len(b.locks) >= maxIdleLocks {
		for n, e := range b.locks {
			if !now.Before(e.expires) {
				delete(b.locks, n)
			}
		}
	}
	b.locks[name] = boltLockEntry{owner: owner, expires: now.Add(ttl)}
	return &boltLock{b: b, name: name, owner: owner}, nil
}

// PeekLock reports whether the named in-memory lock is held.
func (b *Bolt) PeekLock(ctx context.Context, name string) (bool, error) {
	if err := errCtx(ctx); err != nil {
		return false, err
	}
	b.lockMu.Lock()
	defer b.lockMu.Unlock()
	e, ok := b.locks[name]
	return ok && b.now().Before(e.expires), nil
}

type boltLock struct {
	b     *Bolt
	name  string
	owner string
}

// Refresh extends the lock to ttl from now, or returns ErrLockLost.
func (l *boltLock) Refresh(ctx context.Context, ttl time.Duration) error {
	if err := errCtx(ctx); err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("store: lock ttl must be positive, got %v", ttl)
	}
	b := l.b
	b.lockMu.Lock()
	defer b.lockMu.Unlock()
	now := b.now()
	e, ok := b.locks[l.name]
	if !ok || e.owner != l.owner || !now.Before(e.expires) {
		return fmt.Errorf("%w: %q", ErrLockLost, l.name)
	}
	e.expires = now.Add(ttl)
	b.locks[l.name] = e
	return nil
}

// Release frees the lock if this owner still holds it, or returns
// ErrLockLost (and leaves a new owner's lock alone).
func (l *boltLock) Release(ctx context.Context) error {
	b := l.b
	b.lockMu.Lock()
	defer b.lockMu.Unlock()
	e, ok := b.locks[l.name]
	if !ok || e.owner != l.owner {
		return fmt.Errorf("%w: %q", ErrLockLost, l.name)
	}
	delete(b.locks, l.name)
	if !b.now().Before(e.expires) {
		return fmt.Errorf("%w: %q", ErrLockLost, l.name)
	}
	return nil
}
