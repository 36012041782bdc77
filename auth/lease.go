package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/store"
)

// lease keeps a refresh holder's claim alive while it works: it renews the
// tenant lock every LockTTL/3. When the lock was lost (it expired while
// the store was unreachable, or a failover dropped it) it takes it again if
// free; if a successor holds it, it rewrites the holder's mark, so the
// successor sees the mark change and restarts its grace (rule 11): a
// holder that lives is never taken over while the store answers both.
// Methods are safe for concurrent use.
type lease struct {
	m      *Manager
	tenant string

	mu     sync.Mutex
	lock   store.Lock
	lost   bool
	markID string
	// retaken: the lock was lost and taken again while free. Between the
	// two a successor may have held it, taken the mark over, sent and
	// released, so the mark must be re-read before anything is sent.
	retaken bool
	// coverUntil (monotonic): until then every renewal keeps the lock at
	// least this far out, so a send's cover is never shortened (rule 17).
	coverUntil time.Time

	done    chan struct{}
	stopped chan struct{}
}

// holdLease starts renewing lock; call end when done.
func (m *Manager) holdLease(ctx context.Context, tenant string, lock store.Lock) *lease {
	l := &lease{m: m, tenant: tenant, lock: lock, done: make(chan struct{}), stopped: make(chan struct{})}
	go l.run(context.WithoutCancel(ctx))
	return l
}

func (l *lease) run(ctx context.Context) {
	defer close(l.stopped)
	t := time.NewTicker(l.m.opts.LockTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
			l.renew(ctx)
		}
	}
}

func (l *lease) renew(ctx context.Context) {
	m := l.m
	ctx, cancel := context.WithTimeout(ctx, storeCallTimeout)
	defer cancel()
	l.mu.Lock()
	lock, markID := l.lock, l.markID
	ttl := max(m.opts.LockTTL, time.Until(l.coverUntil))
	l.mu.Unlock()
	err := lock.Refresh(ctx, ttl)
	if err == nil {
		l.setLost(false)
		return
	}
	if !errors.Is(err, store.ErrLockLost) {
		m.log.Warn("lock renewal failed", zap.String("tenant", l.tenant), zap.Error(err))
		return
	}
	if nl, err := m.store.TryLock(ctx, lockName(l.tenant), m.opts.LockTTL); err == nil {
		l.mu.Lock()
		l.lock, l.lost, l.retaken = nl, false, true
		l.mu.Unlock()
		m.log.Warn("lock lost and taken again", zap.String("tenant", l.tenant))
		return
	}
	l.setLost(true)
	if markID == "" {
		return
	}
	_, err = store.Update(ctx, m.store, l.tenant, func(t *store.Tenant) error {
		if !t.HasMark(markID) {
			return store.ErrSkip
		}
		return nil // rewritten as is: a new write id tells the successor we live
	})
	if err != nil && !errors.Is(err, store.ErrSkip) {
		m.log.Warn("in-flight mark heartbeat failed", zap.String("tenant", l.tenant), zap.Error(err))
	}
}

// errLeaseStale: the renewal right before a send did not complete in
// time; nothing was sent.
var errLeaseStale = errors.New("auth: the lock renewal before the send was too slow; refresh token not sent")

// coverSend renews the lock synchronously so that, on the store's clock, it
// covers a send that starts now: ttl from the renewal's start (rule 17).
// When the store has replicas the renewal is acknowledged by them, so a
// failover cannot shorten it. It returns the renewal's start on the
// monotonic clock; the caller checks fresh(start) right before the send.
func (l *lease) coverSend(ctx context.Context, ttl time.Duration) (time.Time, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sendRenewFresh)
	defer cancel()
	l.mu.Lock()
	lock := l.lock
	l.mu.Unlock()
	var err error
	if al, ok := lock.(store.AckedLock); ok {
		err = al.RefreshAcked(ctx, ttl)
	} else {
		err = lock.Refresh(ctx, ttl)
	}
	if err != nil {
		if errors.Is(err, store.ErrLockLost) {
			l.setLost(true)
		}
		return start, err
	}
	l.mu.Lock()
	l.lost = false
	l.coverUntil = start.Add(ttl)
	l.mu.Unlock()
	return start, nil
}

// fresh reports whether a renewal started at start still covers a send
// beginning now: no more than sendRenewFresh passed on the monotonic clock.
func fresh(start time.Time) bool { return time.Since(start) <= sendRenewFresh }

func (l *lease) setLost(lost bool) {
	l.mu.Lock()
	l.lost = lost
	l.mu.Unlock()
}

// setMark names the mark the heartbeat keeps alive.
func (l *lease) setMark(id string) {
	l.mu.Lock()
	l.markID = id
	l.mu.Unlock()
}

// wasRetaken reports whether the lock was lost and taken again at some
// point of this lease.
func (l *lease) wasRetaken() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.retaken
}

// held reports whether the last renewal found the lock ours.
func (l *lease) held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.lost
}

// end stops renewing and releases the lock.
func (l *lease) end(ctx context.Context) {
	close(l.done)
	<-l.stopped
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeCallTimeout)
	defer cancel()
	if err := l.lock.Release(rctx); err != nil && !errors.Is(err, store.ErrLockLost) {
		l.m.log.Warn("lock release", zap.String("tenant", l.tenant), zap.Error(err))
	}
}

func lockName(tenant string) string { return "tenant:" + tenant }

func newMarkID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
