package store

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Named locks on Redis (Store.TryLock, PeekLock): SET NX PX with a random
// owner token, renewed and released by owner-checking scripts.

var _ Lock = (*redisLock)(nil)

var (
	//go:embed lua/lock_release.lua
	lockReleaseLua string
	//go:embed lua/lock_refresh.lua
	lockRefreshLua string

	lockReleaseScript = redis.NewScript(lockReleaseLua)
	lockRefreshScript = redis.NewScript(lockRefreshLua)
)

// TryLock takes the named lock for ttl (SET NX PX with a random 128-bit
// owner token) or returns ErrLockHeld. A tenant's lock is also taken under
// its key of earlier versions (legacyLockKey), so replicas of both versions
// exclude each other during a rolling upgrade.
func (r *Redis) TryLock(ctx context.Context, name string, ttl time.Duration) (Lock, error) {
	owner, err := newLockOwner(name, ttl)
	if err != nil {
		return nil, err
	}
	keys := []string{r.lockKey(name)}
	if legacy := r.legacyLockKey(name); legacy != keys[0] {
		keys = append(keys, legacy)
	}
	l := &redisLock{r: r, name: name, keys: keys, owner: owner}
	for i, key := range keys {
		ok, err := r.client.SetNX(ctx, key, owner, ttl).Result()
		if err == nil && !ok {
			err = fmt.Errorf("%w: %q", ErrLockHeld, name)
		} else if err != nil {
			err = fmt.Errorf("store: redis lock %q: %w", name, err)
		}
		if err != nil {
			if i > 0 {
				// Give back what was taken; on failure it expires with ttl.
				held := &redisLock{r: r, name: name, keys: keys[:i], owner: owner}
				_ = held.Release(context.WithoutCancel(ctx))
			}
			return nil, err
		}
	}
	return l, nil
}

// PeekLock reports whether the named lock is held, under its key or (a
// replica of an earlier version during a rolling upgrade) its earlier key;
// one EXISTS each, as they live in different slots.
func (r *Redis) PeekLock(ctx context.Context, name string) (bool, error) {
	keys := []string{r.lockKey(name)}
	if legacy := r.legacyLockKey(name); legacy != keys[0] {
		keys = append(keys, legacy)
	}
	for _, k := range keys {
		n, err := r.client.Exists(ctx, k).Result()
		if err != nil {
			return false, fmt.Errorf("store: redis peek lock %q: %w", name, err)
		}
		if n == 1 {
			return true, nil
		}
	}
	return false, nil
}

type redisLock struct {
	r     *Redis
	name  string
	keys  []string // the lock's key first, then its key of earlier versions
	owner string
}

// Refresh extends the lock to ttl from now, or returns ErrLockLost (when
// any of its keys is no longer held).
func (l *redisLock) Refresh(ctx context.Context, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("store: lock ttl must be positive, got %v", ttl)
	}
	ms := max(ttl.Milliseconds(), 1)
	for _, key := range l.keys {
		n, err := lockRefreshScript.Run(ctx, l.r.client, []string{key}, l.owner, ms).Int64()
		if err != nil {
			return fmt.Errorf("store: redis refresh lock %q: %w", l.name, err)
		}
		if n != 1 {
			return fmt.Errorf("%w: %q", ErrLockLost, l.name)
		}
	}
	return nil
}

var _ AckedLock = (*redisLock)(nil)

// RefreshAcked is Refresh followed by WAIT on the same connection for each
// key (see AckedLock). The WAIT is bounded by the store's wait timeout and
// by ctx.
func (l *redisLock) RefreshAcked(ctx context.Context, ttl time.Duration) error {
	need := l.r.replicaWait(ctx)
	if need == 0 {
		return l.Refresh(ctx, ttl)
	}
	if ttl <= 0 {
		return fmt.Errorf("store: lock ttl must be positive, got %v", ttl)
	}
	ms := max(ttl.Milliseconds(), 1)
	for _, key := range l.keys {
		node, err := l.r.nodeFor(ctx, key)
		if err != nil {
			return fmt.Errorf("store: redis refresh lock %q: %w", l.name, err)
		}
		if err := l.refreshOn(ctx, node.Conn(), key, ms, need); err != nil {
			return err
		}
	}
	return nil
}

func (l *redisLock) refreshOn(ctx context.Context, conn *redis.Conn, key string, ms int64, need int) error {
	defer conn.Close()
	n, err := lockRefreshScript.Run(ctx, conn, []string{key}, l.owner, ms).Int64()
	if err != nil {
		return fmt.Errorf("store: redis refresh lock %q: %w", l.name, err)
	}
	if n != 1 {
		return fmt.Errorf("%w: %q", ErrLockLost, l.name)
	}
	wait := l.r.waitTimeout
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl))
	}
	acked, err := conn.Wait(ctx, need, max(wait, time.Millisecond)).Result()
	if err != nil {
		return fmt.Errorf("%w: lock %q: WAIT: %v", ErrNotAcked, l.name, err)
	}
	if int(acked) < need && !l.r.promoted(ctx) {
		return fmt.Errorf("%w: lock %q: %d of %d replicas within %v", ErrNotAcked, l.name, acked, need, wait)
	}
	return nil
}

// Release frees the lock if this owner still holds it, or returns
// ErrLockLost (and leaves a new owner's lock alone).
func (l *redisLock) Release(ctx context.Context) error {
	var lost bool
	var firstErr error
	for _, key := range l.keys {
		n, err := lockReleaseScript.Run(ctx, l.r.client, []string{key}, l.owner).Int64()
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("store: redis release lock %q: %w", l.name, err)
		}
		if err == nil && n != 1 {
			lost = true
		}
	}
	if firstErr != nil {
		return firstErr
	}
	if lost {
		return fmt.Errorf("%w: %q", ErrLockLost, l.name)
	}
	return nil
}

// newLockOwner checks TryLock's arguments (both backends) and returns a
// random 128-bit owner token.
func newLockOwner(name string, ttl time.Duration) (string, error) {
	if name == "" {
		return "", errors.New("store: lock name is empty")
	}
	if ttl <= 0 {
		return "", fmt.Errorf("store: lock ttl must be positive, got %v", ttl)
	}
	return newOwnerToken()
}

func newOwnerToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("store: reading random lock owner: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
