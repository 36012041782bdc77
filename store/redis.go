package store

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

var _ Store = (*Redis)(nil)

var (
	//go:embed lua/cas_put.lua
	casPutLua string

	casPutScript = redis.NewScript(casPutLua)
)

// DefaultRedisPrefix is the key prefix used when RedisOptions.Prefix is empty.
const DefaultRedisPrefix = "lsproxy:"

// subscribeBuffer is the capacity of a subscription channel; ids beyond it
// are dropped while the reader is slow.
const subscribeBuffer = 64

// RedisOptions configures NewRedis.
type RedisOptions struct {
	// Prefix starts every key and the change channel. Empty: "lsproxy:".
	Prefix string
	// Keys seal and open tokens. Required.
	Keys *Keyring
	// OnError is called for failures that do not fail the call they happen
	// in: publishing a change notification and maintaining the tenant index
	// after the record itself was written; op "replicas" reports a change
	// in the number of connected replicas. op names the step. nil: ignored.
	OnError func(op string, err error)
	// WaitReplicas is how many replicas must acknowledge a PutAcked write
	// while the master has replicas (SPEC §3 rule 14); 0: never wait.
	WaitReplicas int
	// WaitTimeout bounds that wait. 0: 1s.
	WaitTimeout time.Duration
}

// Redis is a Store on Redis (standalone, Sentinel or Cluster). Every key of
// a tenant shares the hash tag {<id>}, so each operation touches one slot.
//
// Layout, with prefix P:
//
//	P tenant:{id}       hash: v = version, d = record (tokens sealed)
//	P tenants:{ixS}     set of tenant ids of index shard S, and the due
//	                    index beside it (see redis_index.go; an index may
//	                    list ids whose record is gone)
//	P lock:tenant:{id}  the lock named "tenant:<id>": same slot as the record
//	P lock:{name}       string: owner token, with expiry (other names)
//	P once:{key}    string: one-time value, with expiry
//	P changes       pub/sub channel: the id of every written or deleted tenant
//
// All methods are safe for concurrent use.
type Redis struct {
	client  redis.UniversalClient
	keys    *Keyring
	prefix  string
	onError func(op string, err error)

	dueIndexReady atomic.Bool // ensureDueIndex found or set the marker
	// flaggedReady: the flagged sets' marker was seen; flaggedBuilding:
	// buildFlagged's pass runs (redis_index.go).
	flaggedReady, flaggedBuilding atomic.Bool

	mu     sync.Mutex
	closed bool
	subs   map[*redisSub]struct{}
	subsWG sync.WaitGroup

	waitReplicas int
	waitTimeout  time.Duration
	rep          replicaState // for PutAcked (replicas.go)
}

type redisSub struct{ cancel context.CancelFunc }

// NewRedis returns a Store on client. The Store owns client: Close closes
// it. It panics if opts.Keys is nil (tokens are never stored unsealed).
func NewRedis(client redis.UniversalClient, opts RedisOptions) *Redis {
	if client == nil {
		panic("store: NewRedis with nil client")
	}
	if opts.Keys == nil || len(opts.Keys.keys) == 0 {
		panic("store: NewRedis without encryption keys")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultRedisPrefix
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = time.Second
	}
	return &Redis{
		client:       client,
		keys:         opts.Keys,
		prefix:       opts.Prefix,
		onError:      opts.OnError,
		subs:         make(map[*redisSub]struct{}),
		waitReplicas: max(opts.WaitReplicas, 0),
		waitTimeout:  opts.WaitTimeout,
	}
}

func (r *Redis) tenantKey(id string) string { return r.prefix + "tenant:{" + id + "}" }

// lockKey puts the lock of a tenant ("tenant:<id>") in the tenant's slot,
// so record, in-flight mark and lock live on one Cluster shard and fail
// over together.
func (r *Redis) lockKey(name string) string {
	if id, ok := strings.CutPrefix(name, "tenant:"); ok && id != "" {
		return r.prefix + "lock:tenant:{" + id + "}"
	}
	return r.prefix + "lock:{" + name + "}"
}

// legacyLockKey is where versions before the shared slot kept name's lock.
func (r *Redis) legacyLockKey(name string) string { return r.prefix + "lock:{" + name + "}" }
func (r *Redis) onceKey(key string) string        { return r.prefix + "once:{" + key + "}" }
func (r *Redis) indexKey() string                 { return r.prefix + "tenants" }
func (r *Redis) channel() string                  { return r.prefix + "changes" }

func (r *Redis) report(op string, err error) {
	if r.onError != nil {
		r.onError(op, err)
	}
}

// Get returns the tenant, ErrNotFound, or an error wrapping ErrDecrypt when
// no configured key opens its tokens.
func (r *Redis) Get(ctx context.Context, id string) (*Tenant, error) {
	vals, err := r.client.HMGet(ctx, r.tenantKey(id), "v", "d", "w").Result()
	if err != nil {
		return nil, fmt.Errorf("store: redis get tenant %q: %w", id, err)
	}
	ver, blob, err := parseRaw(id, vals)
	if err != nil {
		return nil, err
	}
	t, err := decodeTenant(r.keys, id, blob)
	if err != nil {
		return nil, err
	}
	t.Version = ver
	t.WriteID, _ = vals[2].(string) // what cas_put.lua compares ("" before write ids)
	return t, nil
}

// getRaw returns the version and the stored (sealed) record of tenant id,
// or ErrNotFound.
func (r *Redis) getRaw(ctx context.Context, id string) (int64, []byte, error) {
	if id == "" {
		return 0, nil, errors.New("store: tenant id is empty")
	}
	vals, err := r.client.HMGet(ctx, r.tenantKey(id), "v", "d").Result()
	if err != nil {
		return 0, nil, fmt.Errorf("store: redis get tenant %q: %w", id, err)
	}
	return parseRaw(id, vals)
}

// parseRaw checks HMGET's v and d of tenant id.
func parseRaw(id string, vals []any) (int64, []byte, error) {
	if len(vals) < 2 || vals[0] == nil || vals[1] == nil {
		return 0, nil, fmt.Errorf("%w: tenant %q", ErrNotFound, id)
	}
	vs, _ := vals[0].(string)
	d, _ := vals[1].(string)
	ver, err := strconv.ParseInt(vs, 10, 64)
	if err != nil || ver < 1 {
		return 0, nil, fmt.Errorf("store: record of tenant %q has a corrupt version", id)
	}
	return ver, []byte(d), nil
}

func (r *Redis) keyring() *Keyring { return r.keys }

// List returns the ids of all tenants, sorted: every index shard and the
// earlier single set, one pipelined SMEMBERS each. Ids in the index whose
// record is gone (a create that did not complete) are left out. It reads
// every id; ListPage reads one page.
func (r *Redis) List(ctx context.Context) ([]string, error) {
	ids, err := r.allIndexed(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: redis list tenants: %w", err)
	}
	if len(ids) == 0 {
		return []string{}, nil
	}
	out, err := r.existing(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("store: redis list tenants: %w", err)
	}
	return out, nil
}

// Put writes t if the stored version equals expect (0: must not exist) and
// returns the new version, or an error wrapping ErrConflict. The write is
// one Lua script on the tenant's key; a retried script whose first run was
// applied (reply lost) reports success, not a conflict.
func (r *Redis) Put(ctx context.Context, t *Tenant, expect int64) (int64, error) {
	if expect < 0 {
		return 0, fmt.Errorf("store: negative expected version %d", expect)
	}
	blob, writeID, err := encodeTenant(r.keys, t)
	if err != nil {
		return 0, err
	}
	id := t.ID
	if expect == 0 {
		// Index first: a crash after this leaves a listed id without a
		// record, which List filters out, never a record that is not listed.
		if err := r.client.SAdd(ctx, r.shardKeys(indexShard(id))[0], id).Err(); err != nil {
			return 0, fmt.Errorf("store: redis put tenant %q: index: %w", id, err)
		}
	}
	res, err := casPutScript.Run(ctx, r.client, []string{r.tenantKey(id)}, expect, blob, t.WriteID, writeID).Int64Slice()
	if err != nil {
		return 0, fmt.Errorf("store: redis put tenant %q: %w", id, err)
	}
	if len(res) != 2 {
		return 0, fmt.Errorf("store: redis put tenant %q: unexpected script reply %v", id, res)
	}
	if res[0] != 1 {
		return 0, fmt.Errorf("%w: tenant %q is at version %d, expected %d", ErrConflict, id, res[1], expect)
	}
	// The id again (a Delete racing with a create may have removed it
	// between the first SADD and the script) and the due index.
	if err := r.index(ctx, t); err != nil {
		r.report("index", err)
	}
	r.publish(ctx, id)
	t.Version, t.WriteID = res[1], writeID
	return res[1], nil
}

// Delete removes the tenant or returns ErrNotFound.
func (r *Redis) Delete(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("store: tenant id is empty")
	}
	key := r.tenantKey(id)
	n, err := r.client.Del(ctx, key).Result()
	if err != nil {
		return fmt.Errorf("store: redis delete tenant %q: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: tenant %q", ErrNotFound, id)
	}
	// Index after the record: a crash leaves a listed id without a record.
	if err := r.unindex(ctx, id); err != nil {
		r.report("index", err)
	} else if t, err := r.Get(ctx, id); err == nil {
		// Recreated meanwhile: index it again.
		if err := r.index(ctx, t); err != nil {
			r.report("index", err)
		}
	}
	r.publish(ctx, id)
	return nil
}

// Attempts of publish: a lost notification leaves other replicas serving
// the tenant's previous token until it is due for a refresh (auth/cache.go).
const (
	publishAttempts = 3
	publishTimeout  = time.Second
	publishBackoff  = 100 * time.Millisecond
)

// publish notifies subscribers that id changed. It tries publishAttempts
// times, each bounded by publishTimeout, on a context the caller's end does
// not cancel: the write it announces is done either way.
func (r *Redis) publish(ctx context.Context, id string) {
	ctx = context.WithoutCancel(ctx)
	var err error
	for i := 0; i < publishAttempts; i++ {
		if i > 0 {
			time.Sleep(publishBackoff << (i - 1)) // a failover needs a moment
		}
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		err = r.client.Publish(pctx, r.channel(), id).Err()
		cancel()
		if err == nil {
			return
		}
	}
	r.report("publish", fmt.Errorf("store: redis publish change of tenant %q (%d attempts): %w", id, publishAttempts, err))
}

// PutOnce stores value under key for ttl, or returns ErrConflict if the key
// exists.
func (r *Redis) PutOnce(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if key == "" {
		return errors.New("store: one-time key is empty")
	}
	if ttl <= 0 {
		return fmt.Errorf("store: one-time value ttl must be positive, got %v", ttl)
	}
	ok, err := r.client.SetNX(ctx, r.onceKey(key), value, ttl).Result()
	if err != nil {
		return fmt.Errorf("store: redis put one-time value: %w", err)
	}
	if !ok {
		return fmt.Errorf("%w: one-time key exists", ErrConflict)
	}
	return nil
}

// TakeOnce reads and deletes the value under key (GETDEL), or returns
// ErrNotFound.
func (r *Redis) TakeOnce(ctx context.Context, key string) ([]byte, error) {
	if key == "" {
		return nil, errors.New("store: one-time key is empty")
	}
	b, err := r.client.GetDel(ctx, r.onceKey(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: one-time value", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: redis take one-time value: %w", err)
	}
	return b, nil
}

// Subscribe delivers the ids published on the change channel by any
// process sharing the prefix. It returns once the subscription is
// confirmed, so every write that completes afterwards is delivered (unless
// the reader is slow or the connection drops: go-redis reconnects and
// resubscribes, ids published meanwhile are lost; either is then reported
// with an empty id). The channel is closed when ctx is done or the Store
// is closed.
func (r *Redis) Subscribe(ctx context.Context) (<-chan string, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errors.New("store: redis store is closed")
	}
	ctx, cancel := context.WithCancel(ctx)
	sub := &redisSub{cancel: cancel}
	r.subs[sub] = struct{}{}
	r.subsWG.Add(1)
	r.mu.Unlock()

	done := func() {
		cancel()
		r.mu.Lock()
		delete(r.subs, sub)
		r.mu.Unlock()
		r.subsWG.Done()
	}

	ps := r.client.Subscribe(ctx, r.channel())
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		done()
		return nil, fmt.Errorf("store: redis subscribe: %w", err)
	}
	msgs := ps.ChannelWithSubscriptions(redis.WithChannelSize(subscribeBuffer))
	out := make(chan string, subscribeBuffer)
	go func() {
		defer done()
		defer close(out)
		defer ps.Close()
		lost := false // ids may have been lost; "" not delivered yet
		for {
			var report chan<- string // nil (never ready) unless lost
			if lost {
				report = out
			}
			select {
			case <-ctx.Done():
				return
			case report <- "":
				lost = false
			case m, ok := <-msgs:
				if !ok {
					return
				}
				switch m := m.(type) {
				case *redis.Subscription:
					// After the first: go-redis reconnected and subscribed
					// again; what was published meanwhile is lost.
					if m.Kind == "subscribe" {
						lost = true
					}
				case *redis.Message:
					if lost {
						continue // "" first; it covers this id too
					}
					select {
					case out <- m.Payload:
					default: // slow reader: drop, and say so
						lost = true
					}
				}
			}
		}
	}()
	return out, nil
}

// Ping reports whether Redis answers.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("store: redis ping: %w", err)
	}
	return nil
}

// Close ends all subscriptions (their channels are closed when Close
// returns) and closes the client.
func (r *Redis) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	for s := range r.subs {
		s.cancel()
	}
	r.mu.Unlock()
	r.subsWG.Wait()
	if err := r.client.Close(); err != nil {
		return fmt.Errorf("store: redis close: %w", err)
	}
	return nil
}
