package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
)

var _ Store = (*Bolt)(nil)

// BoltFile is the name of the data file in the directory given to OpenBolt.
const BoltFile = "lsproxy.db"

var (
	bucketTenants = []byte("tenants")
	bucketOnce    = []byte("once")
)

// oncePurgeInterval is how often PutOnce sweeps expired one-time values.
const oncePurgeInterval = time.Minute

// Bolt is a Store in one bbolt file, for a single process: the file is
// locked while open, locks are held in memory and Subscribe sees only this
// process's writes.
//
// Layout: bucket "tenants" maps id to 8-byte big-endian version + record;
// bucket "once" maps key to 8-byte big-endian expiry (Unix nanoseconds) +
// value. Expired one-time values are treated as missing and swept by
// PutOnce at most once a minute. Buckets "due" and "due-of" index tenants
// by due time (bolt_index.go).
//
// All methods are safe for concurrent use.
type Bolt struct {
	db   *bbolt.DB
	path string
	keys *Keyring

	// now is the clock seam for lock and one-time value expiry. Tests set
	// it right after OpenBolt, before any other call. Default time.Now.
	now func() time.Time

	lockMu sync.Mutex
	locks  map[string]boltLockEntry

	lastPurge time.Time // guarded by bbolt's single writer

	subMu   sync.RWMutex
	subs    map[*boltSub]struct{}
	closed  bool
	closing chan struct{}
}

type boltSub struct {
	ch   chan string
	lost atomic.Bool // an id was dropped; "" not delivered yet
}

// OpenBolt opens (creating if needed) dir/lsproxy.db; dir is created with
// mode 0700 and the file with 0600. If another process has the file open it
// returns an error wrapping ErrLocked after about a second.
func OpenBolt(dir string, keys *Keyring) (*Bolt, error) {
	if keys == nil || len(keys.keys) == 0 {
		return nil, errors.New("store: no encryption key configured")
	}
	if dir == "" {
		return nil, errors.New("store: data directory is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: creating data directory: %w", err)
	}
	path := filepath.Join(dir, BoltFile)
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("store: opening %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketTenants, bucketOnce} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		if tx.Bucket(bucketDueOf) != nil {
			return nil
		}
		for _, name := range [][]byte{bucketDue, bucketDueOf} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return buildDueIndex(tx, keys) // a file of an earlier version
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: initialising %s: %w", path, err)
	}
	return &Bolt{
		db:      db,
		path:    path,
		keys:    keys,
		now:     time.Now,
		locks:   make(map[string]boltLockEntry),
		subs:    make(map[*boltSub]struct{}),
		closing: make(chan struct{}),
	}, nil
}

// Path returns the data file's path.
func (b *Bolt) Path() string { return b.path }

func errCtx(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// Get returns the tenant, ErrNotFound, or an error wrapping ErrDecrypt when
// no configured key opens its tokens.
func (b *Bolt) Get(ctx context.Context, id string) (*Tenant, error) {
	ver, blob, err := b.getRaw(ctx, id)
	if err != nil {
		return nil, err
	}
	t, err := decodeTenant(b.keys, id, blob)
	if err != nil {
		return nil, err
	}
	t.Version = ver
	return t, nil
}

// getRaw returns the version and the stored (sealed) record of tenant id,
// or ErrNotFound.
func (b *Bolt) getRaw(ctx context.Context, id string) (int64, []byte, error) {
	if err := errCtx(ctx); err != nil {
		return 0, nil, err
	}
	if id == "" {
		return 0, nil, errors.New("store: tenant id is empty")
	}
	var val []byte
	err := b.db.View(func(tx *bbolt.Tx) error {
		if v := tx.Bucket(bucketTenants).Get([]byte(id)); v != nil {
			val = bytes.Clone(v) // v is only valid inside the transaction
		}
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("store: bolt get tenant %q: %w", id, err)
	}
	if val == nil {
		return 0, nil, fmt.Errorf("%w: tenant %q", ErrNotFound, id)
	}
	return splitVersion(id, val)
}

func (b *Bolt) keyring() *Keyring { return b.keys }

func splitVersion(id string, v []byte) (int64, []byte, error) {
	if len(v) < 8 {
		return 0, nil, fmt.Errorf("store: record of tenant %q is corrupt", id)
	}
	return int64(binary.BigEndian.Uint64(v[:8])), v[8:], nil
}

// List returns the ids of all tenants, sorted.
func (b *Bolt) List(ctx context.Context) ([]string, error) {
	if err := errCtx(ctx); err != nil {
		return nil, err
	}
	ids := []string{}
	err := b.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketTenants).ForEach(func(k, _ []byte) error {
			ids = append(ids, string(k)) // keys are kept in byte order
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: bolt list tenants: %w", err)
	}
	return ids, nil
}

// Put writes t if the stored version equals expect (0: must not exist) and
// returns the new version, or an error wrapping ErrConflict.
func (b *Bolt) Put(ctx context.Context, t *Tenant, expect int64) (int64, error) {
	if err := errCtx(ctx); err != nil {
		return 0, err
	}
	if expect < 0 {
		return 0, fmt.Errorf("store: negative expected version %d", expect)
	}
	blob, writeID, err := encodeTenant(b.keys, t)
	if err != nil {
		return 0, err
	}
	id := t.ID
	var cur int64
	err = b.db.Update(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(bucketTenants)
		cur = 0
		var stored []byte
		if v := bk.Get([]byte(id)); v != nil {
			var err error
			if cur, stored, err = splitVersion(id, v); err != nil {
				return err
			}
		}
		if cur != expect {
			return fmt.Errorf("%w: tenant %q is at version %d, expected %d", ErrConflict, id, cur, expect)
		}
		if t.WriteID != "" && storedWriteID(stored) != t.WriteID {
			return fmt.Errorf("%w: tenant %q at version %d was written by another write", ErrConflict, id, cur)
		}
		val := make([]byte, 8+len(blob))
		binary.BigEndian.PutUint64(val, uint64(cur+1))
		copy(val[8:], blob)
		if err := bk.Put([]byte(id), val); err != nil {
			return err
		}
		return indexDue(tx, id, t)
	})
	if errors.Is(err, ErrConflict) {
		return 0, err
	}
	if err != nil {
		return 0, fmt.Errorf("store: bolt put tenant %q: %w", id, err)
	}
	b.notify(id)
	t.Version, t.WriteID = cur+1, writeID
	return cur + 1, nil
}

// Delete removes the tenant or returns ErrNotFound.
func (b *Bolt) Delete(ctx context.Context, id string) error {
	if err := errCtx(ctx); err != nil {
		return err
	}
	if id == "" {
		return errors.New("store: tenant id is empty")
	}
	err := b.db.Update(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(bucketTenants)
		if bk.Get([]byte(id)) == nil {
			return fmt.Errorf("%w: tenant %q", ErrNotFound, id)
		}
		if err := bk.Delete([]byte(id)); err != nil {
			return err
		}
		return indexDue(tx, id, nil)
	})
	if errors.Is(err, ErrNotFound) {
		return err
	}
	if err != nil {
		return fmt.Errorf("store: bolt delete tenant %q: %w", id, err)
	}
	b.notify(id)
	return nil
}

// PutOnce stores value under key for ttl, or returns ErrConflict if an
// unexpired value exists under key.
func (b *Bolt) PutOnce(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := errCtx(ctx); err != nil {
		return err
	}
	if key == "" {
		return errors.New("store: one-time key is empty")
	}
	if ttl <= 0 {
		return fmt.Errorf("store: one-time value ttl must be positive, got %v", ttl)
	}
	err := b.db.Update(func(tx *bbolt.Tx) error {
		now := b.now()
		bk := tx.Bucket(bucketOnce)
		if now.Sub(b.lastPurge) >= oncePurgeInterval {
			if err := purgeOnce(bk, now); err != nil {
				return err
			}
			b.lastPurge = now
		}
		if v := bk.Get([]byte(key)); v != nil && !onceExpired(v, now) {
			return fmt.Errorf("%w: one-time key exists", ErrConflict)
		}
		val := make([]byte, 8+len(value))
		binary.BigEndian.PutUint64(val, uint64(now.Add(ttl).UnixNano()))
		copy(val[8:], value)
		return bk.Put([]byte(key), val)
	})
	if errors.Is(err, ErrConflict) {
		return err
	}
	if err != nil {
		return fmt.Errorf("store: bolt put one-time value: %w", err)
	}
	return nil
}

func onceExpired(v []byte, now time.Time) bool {
	return len(v) < 8 || now.UnixNano() >= int64(binary.BigEndian.Uint64(v[:8]))
}

func purgeOnce(bk *bbolt.Bucket, now time.Time) error {
	var expired [][]byte
	if err := bk.ForEach(func(k, v []byte) error {
		if onceExpired(v, now) {
			expired = append(expired, bytes.Clone(k))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range expired {
		if err := bk.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// TakeOnce reads and deletes the value under key, or returns ErrNotFound
// if it is missing or expired.
func (b *Bolt) TakeOnce(ctx context.Context, key string) ([]byte, error) {
	if err := errCtx(ctx); err != nil {
		return nil, err
	}
	if key == "" {
		return nil, errors.New("store: one-time key is empty")
	}
	var out []byte
	err := b.db.Update(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(bucketOnce)
		v := bk.Get([]byte(key))
		if v == nil {
			return fmt.Errorf("%w: one-time value", ErrNotFound)
		}
		if !onceExpired(v, b.now()) {
			out = append([]byte{}, v[8:]...)
		}
		// An expired value is deleted too (out stays nil: reported missing).
		return bk.Delete([]byte(key))
	})
	if errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("store: bolt take one-time value: %w", err)
	}
	if out == nil {
		return nil, fmt.Errorf("%w: one-time value", ErrNotFound)
	}
	return out, nil
}

// Subscribe delivers the id of every tenant this Bolt writes or deletes
// after the call, until ctx is done or the Bolt is closed; the channel is
// then closed. Ids are dropped while the channel's buffer is full.
func (b *Bolt) Subscribe(ctx context.Context) (<-chan string, error) {
	if err := errCtx(ctx); err != nil {
		return nil, err
	}
	s := &boltSub{ch: make(chan string, subscribeBuffer)}
	b.subMu.Lock()
	if b.closed {
		b.subMu.Unlock()
		return nil, errors.New("store: bolt store is closed")
	}
	b.subs[s] = struct{}{}
	b.subMu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-b.closing:
		}
		b.subMu.Lock()
		if _, ok := b.subs[s]; ok {
			delete(b.subs, s)
			close(s.ch)
		}
		b.subMu.Unlock()
	}()
	return s.ch, nil
}

func (b *Bolt) notify(id string) {
	b.subMu.RLock()
	defer b.subMu.RUnlock()
	for s := range b.subs {
		if s.lost.Load() {
			select {
			case s.ch <- "": // ids were dropped: say so first
				s.lost.Store(false)
			default:
				continue
			}
		}
		select {
		case s.ch <- id:
		default: // slow reader: drop (best effort by contract), and say so
			s.lost.Store(true)
		}
	}
}

// Ping reports whether the file is open.
func (b *Bolt) Ping(ctx context.Context) error {
	if err := errCtx(ctx); err != nil {
		return err
	}
	if err := b.db.View(func(*bbolt.Tx) error { return nil }); err != nil {
		return fmt.Errorf("store: bolt ping: %w", err)
	}
	return nil
}

// Close ends all subscriptions (their channels are closed when Close
// returns) and closes the file, releasing its lock.
func (b *Bolt) Close() error {
	b.subMu.Lock()
	if b.closed {
		b.subMu.Unlock()
		return nil
	}
	b.closed = true
	close(b.closing)
	for s := range b.subs {
		delete(b.subs, s)
		close(s.ch)
	}
	b.subMu.Unlock()
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("store: closing %s: %w", b.path, err)
	}
	return nil
}
