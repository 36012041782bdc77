package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"
)

// Sessions keeps short-lived, renewable values shared by every process of
// the store: the operator console's sessions. Unlike a one-time value
// (PutOnce/TakeOnce) a session is read many times, renewed, and deleted
// when its operator signs out. Both backends implement it; methods are
// safe for concurrent use.
type Sessions interface {
	// PutSession stores value under key for ttl, replacing any value and
	// expiry already there.
	PutSession(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// GetSession returns the value under key, or ErrNotFound when it is
	// missing or expired.
	GetSession(ctx context.Context, key string) ([]byte, error)
	// DeleteSession removes key; a missing key is not an error.
	DeleteSession(ctx context.Context, key string) error
}

var (
	_ Sessions = (*Redis)(nil)
	_ Sessions = (*Bolt)(nil)
)

func checkSession(key string, ttl time.Duration, put bool) error {
	if key == "" {
		return errors.New("store: session key is empty")
	}
	if put && ttl <= 0 {
		return fmt.Errorf("store: session ttl must be positive, got %v", ttl)
	}
	return nil
}

func (r *Redis) sessionKey(key string) string { return r.prefix + "session:{" + key + "}" }

// PutSession is SET key value PX ttl.
func (r *Redis) PutSession(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := checkSession(key, ttl, true); err != nil {
		return err
	}
	if err := r.client.Set(ctx, r.sessionKey(key), value, ttl).Err(); err != nil {
		return fmt.Errorf("store: redis put session: %w", err)
	}
	return nil
}

// GetSession is GET key.
func (r *Redis) GetSession(ctx context.Context, key string) ([]byte, error) {
	if err := checkSession(key, 0, false); err != nil {
		return nil, err
	}
	b, err := r.client.Get(ctx, r.sessionKey(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: session", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: redis get session: %w", err)
	}
	return b, nil
}

// DeleteSession is DEL key.
func (r *Redis) DeleteSession(ctx context.Context, key string) error {
	if err := checkSession(key, 0, false); err != nil {
		return err
	}
	if err := r.client.Del(ctx, r.sessionKey(key)).Err(); err != nil {
		return fmt.Errorf("store: redis delete session: %w", err)
	}
	return nil
}

// Bolt keeps sessions in the one-time values' bucket (same expiry layout,
// purged with them) under a prefix no one-time key uses.
func boltSessionKey(key string) []byte { return []byte("\x00session:" + key) }

// PutSession stores value under key for ttl.
func (b *Bolt) PutSession(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := errCtx(ctx); err != nil {
		return err
	}
	if err := checkSession(key, ttl, true); err != nil {
		return err
	}
	err := b.db.Update(func(tx *bbolt.Tx) error {
		val := make([]byte, 8+len(value))
		putExpiry(val, b.now().Add(ttl))
		copy(val[8:], value)
		return tx.Bucket(bucketOnce).Put(boltSessionKey(key), val)
	})
	if err != nil {
		return fmt.Errorf("store: bolt put session: %w", err)
	}
	return nil
}

// GetSession returns the unexpired value under key.
func (b *Bolt) GetSession(ctx context.Context, key string) ([]byte, error) {
	if err := errCtx(ctx); err != nil {
		return nil, err
	}
	if err := checkSession(key, 0, false); err != nil {
		return nil, err
	}
	var out []byte
	err := b.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketOnce).Get(boltSessionKey(key))
		if v != nil && !onceExpired(v, b.now()) {
			out = append([]byte{}, v[8:]...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: bolt get session: %w", err)
	}
	if out == nil {
		return nil, fmt.Errorf("%w: session", ErrNotFound)
	}
	return out, nil
}

// DeleteSession removes key.
func (b *Bolt) DeleteSession(ctx context.Context, key string) error {
	if err := errCtx(ctx); err != nil {
		return err
	}
	if err := checkSession(key, 0, false); err != nil {
		return err
	}
	if err := b.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketOnce).Delete(boltSessionKey(key))
	}); err != nil {
		return fmt.Errorf("store: bolt delete session: %w", err)
	}
	return nil
}
