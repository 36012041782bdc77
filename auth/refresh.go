package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/lsproxy/lsproxy/internal/defect"
	"github.com/lsproxy/lsproxy/store"
)

// The acquisition path, in the order of SPEC §3. Step 1, the in-process
// cache, is Token's fast path (manager.go); everything after a cache miss
// is here, top to bottom:
//
//	2  shared          one acquisition per tenant and caller kind in this process
//	2  acquire         the store lock: one holder across replicas
//	5  waitForHolder   not the holder: wait for its write, then re-read
//	3  refreshHolding  the holder: re-read under the lock
//	11 awaitTakeover   an earlier holder's mark: wait out its grace
//	18 pace            the token endpoint's rate budget, before token_timeout
//	14 mark            the in-flight mark, acknowledged by replicas
//	17 leaseForSend    the lock renewed to cover the send, checked fresh
//	13 sendGrant       the token request, with a full token_timeout
//	4  storeGrant      the fenced write, retried for as long as we live
//	6  rejected        invalid_grant: flag only after a re-read (and the guard)
//	7  undoMark        a transient failure: the token was not consumed
// Helpers follow in call order; refresh_answer.go (useStored,
// staleOrUnavailable), guard.go, lease.go and manager.go hold the rest.

// Timing of the protocol (see also defaults.go).
const (
	// storeCallTimeout bounds one store call of a holder that must not
	// wait long (background renewal, heartbeat, undo).
	storeCallTimeout = time.Second
	// writeAttemptTimeout bounds one attempt to store a grant, and
	// writeRetryMax caps the delay between attempts: together they are the
	// holder's write-retry interval (0.75 s), which the lock covers after
	// the token request (rule 17) and TakeoverGrace must exceed (rule 11).
	writeAttemptTimeout = 500 * time.Millisecond
	writeRetryMax       = 250 * time.Millisecond
	// sendRenewFresh bounds the renewal right before a send: the refresh
	// token leaves only if no more than this passed, on the monotonic
	// clock, since that renewal started (rule 17).
	sendRenewFresh = 500 * time.Millisecond
	// legacyMarkWindow: a mark written before rule 11 (no mark id) had
	// a holder that tried to write until 30 s (+2 s clock skew) after it;
	// its successor observes it unchanged this long on its own clock.
	legacyMarkWindow = 32 * time.Second
)

// 2. shared runs fn once per key at a time in this process (key ""
// shares nothing). fn runs on a context detached from the caller's and
// without deadline, so that no caller giving up ever abandons a token
// request or the write of its result (rules 11, 13); the caller itself
// stops waiting when its ctx ends or after WaitFor + TokenTimeout + the
// first write attempt. Once FinishRefreshes was called, fn does not run
// and *UnavailableError is returned.
func (m *Manager) shared(ctx context.Context, key, tenant string, fn func(context.Context) (Token, error)) (Token, error) {
	run := func() (any, error) {
		if !m.begin() {
			return nil, &UnavailableError{Tenant: tenant, RetryAfter: time.Second, Err: errShuttingDown}
		}
		defer m.inflight.Done()
		return fn(context.WithoutCancel(ctx))
	}
	var ch <-chan singleflight.Result
	if key == "" {
		c := make(chan singleflight.Result, 1)
		go func() { v, err := run(); c <- singleflight.Result{Val: v, Err: err} }()
		ch = c
	} else {
		ch = m.group.DoChan(key, run)
	}
	t := time.NewTimer(m.opts.WaitFor + m.opts.TokenTimeout + storeCallTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		if r.Err != nil {
			return Token{}, r.Err
		}
		return r.Val.(Token), nil
	case <-ctx.Done():
		return Token{}, ctx.Err()
	case <-t.C:
		return Token{}, &UnavailableError{Tenant: tenant, RetryAfter: time.Second, Err: errors.New("token acquisition still running (store or token endpoint slow)")}
	}
}

// want says what a caller needs from acquire.
type want struct {
	force  bool          // refresh even a fresh token, unless the stored one differs from used
	used   string        // the access token the caller already has
	minAge time.Duration // with force: no refresh if the last one is younger than this
	retry  bool          // send a flagged tenant's refresh token once more (Retry)
	since  watch         // taken by acquire before its first read (cache.go)
}

// 2. acquire reads the record and, when it must be refreshed, takes the
// tenant's store lock or waits for its holder. Waiting is bounded by
// WaitFor; the token request and the write are not (ctx has no deadline).
func (m *Manager) acquire(ctx context.Context, tenant string, w want) (tok Token, err error) {
	waitCtx, cancel := context.WithTimeout(ctx, m.opts.WaitFor)
	defer cancel()
	// lsproxy.refresh spans the acquisition from the first lock attempt
	// on: lsproxy.lock_wait, and the holder's work, are its children.
	var refreshCtx context.Context
	var endRefresh func(error)
	defer func() {
		if endRefresh != nil {
			endRefresh(err)
		}
	}()
	w.since = m.watchChanges()
	rec, err := m.store.Get(waitCtx, tenant)
	if err != nil {
		return Token{}, m.storeErr(tenant, err)
	}
	if !w.retry && rec.Status == store.StatusReauthorizationRequired {
		rec = m.revertPending(waitCtx, rec) // a guard's revert not done yet (rule 20)
	}
	for { // bounded by waitCtx: waitForHolder fails when it ends
		if tok, done, err := m.useStored(rec, w); done {
			return tok, err
		}
		if !w.retry && m.heldBack(ctx, rec) {
			return m.staleOrUnavailable(rec, errGuardHeld)
		}
		lockStart := m.now()
		if endRefresh == nil {
			refreshCtx, endRefresh = span(ctx, "lsproxy.refresh", tenant)
		}
		_, endLock := span(refreshCtx, "lsproxy.lock_wait", tenant)
		lock, err := m.store.TryLock(waitCtx, lockName(tenant), m.opts.LockTTL)
		endLock(err)
		if errors.Is(err, store.ErrLockHeld) {
			if rec, err = m.waitForHolder(waitCtx, rec); err != nil {
				return Token{}, err
			}
			continue
		}
		if err != nil {
			return Token{}, m.storeErr(tenant, err)
		}
		m.opts.Metrics.lockWait(m.now().Sub(lockStart))
		return m.refreshHolding(refreshCtx, waitCtx, lock, tenant, w)
	}
}

// 5. waitForHolder polls the record until its fencing value changes (the
// holder wrote) or the lock is free (the holder finished without a write,
// or its lease ran out), and returns the record read last. It answers
// *UnavailableError when ctx ends first.
func (m *Manager) waitForHolder(ctx context.Context, seen *store.Tenant) (*store.Tenant, error) {
	b := newBackoff(10*time.Millisecond, 200*time.Millisecond)
	for {
		if b.wait(ctx) != nil {
			return nil, &UnavailableError{Tenant: seen.ID, RetryAfter: time.Second, Err: errors.New("timed out waiting for another replica's refresh")}
		}
		rec, err := m.store.Get(ctx, seen.ID)
		if err != nil {
			return nil, m.storeErr(seen.ID, err)
		}
		if rec.Version != seen.Version || rec.WriteID != seen.WriteID {
			return rec, nil
		}
		if held, err := m.store.PeekLock(ctx, lockName(seen.ID)); err == nil && !held {
			return rec, nil
		}
	}
}

// 3. refreshHolding runs with the tenant lock held: re-read, take over an
// earlier mark if it must, mark, send, and act on the answer. The lease is
// renewed until the result is stored.
func (m *Manager) refreshHolding(ctx, waitCtx context.Context, lock store.Lock, tenant string, w want) (Token, error) {
	l := m.holdLease(ctx, tenant, lock)
	defer l.end(ctx)

	cur, err := m.store.Get(waitCtx, tenant) // re-read under the lock
	if err != nil {
		return Token{}, m.storeErr(tenant, err)
	}
	if tok, done, err := m.useStored(cur, w); done {
		return tok, err
	}
	interrupted := cur.RefreshInFlight
	if interrupted {
		next, err := m.awaitTakeover(waitCtx, cur, l)
		if err != nil {
			return m.staleOrUnavailable(cur, err)
		}
		if next != cur { // the earlier holder (or someone) wrote meanwhile
			if tok, done, err := m.useStored(next, w); done {
				return tok, err
			}
			if next.RefreshInFlight {
				return m.staleOrUnavailable(next, errors.New("another refresh is in flight"))
			}
			cur, interrupted = next, false
		}
	}
	if open, err := m.breakerOpenFor(cur); err != nil {
		return Token{}, err // no token host: nothing sent, no breaker counts it
	} else if open {
		m.observeEndpoint(ErrBreakerOpen, 0)
		return m.staleOrUnavailable(cur, ErrBreakerOpen)
	}
	// 18. Wait for the token endpoint's rate budget before anything is
	// marked and before token_timeout starts, bounded by what is left of
	// the acquisition's WaitFor.
	sendCtx, err := m.pace(ctx, waitCtx, cur)
	if err != nil {
		return m.staleOrUnavailable(cur, err)
	}
	if err := m.closingLeaves(cur.ID); err != nil {
		return m.staleOrUnavailable(cur, err)
	}

	marked, err := m.mark(waitCtx, cur, l)
	if err != nil {
		return m.staleOrUnavailable(cur, err)
	}
	// 17. The send is inside the lease: renew now so that the lock covers
	// the whole token request plus the write retry, and send only while
	// that renewal is fresh (and, at shutdown, while the budget covers it).
	if err := m.leaseForSend(ctx, l, cur.ID); err != nil {
		return m.staleOrUnavailable(m.undoMark(ctx, marked, interrupted, nil), err)
	}
	grant, err := m.sendGrant(sendCtx, cur)
	switch {
	case err == nil:
		wctx, end := span(ctx, "lsproxy.store_write", tenant)
		tok, err := m.storeGrant(wctx, marked, grant)
		end(err)
		return tok, err
	case errors.Is(err, ErrInvalidGrant):
		return m.rejected(ctx, marked, interrupted, w)
	case errors.Is(err, ErrOutcomeUnknown):
		// Leave the mark: the refresh token may be spent. A successor
		// sends it once after the grace (and flags on invalid_grant).
		m.opts.Metrics.refresh("unknown")
		m.log.Warn("refresh outcome unknown", zap.String("tenant", tenant), zap.Error(err))
		return m.staleOrUnavailable(marked, err)
	default:
		m.opts.Metrics.refresh("transient")
		m.log.Warn("refresh failed", zap.String("tenant", tenant), zap.Error(err))
		return m.staleOrUnavailable(m.undoMark(ctx, marked, interrupted, err), err)
	}
}

// 18. pace waits, when the Refresher has a rate-governed token endpoint,
// until the refresh may be sent, at most for what is left of waitCtx (the
// acquisition's WaitFor). It returns the context to send with. A refusal
// is logged as the governor's and answered 503; it never counts against
// the breaker (nothing was sent).
func (m *Manager) pace(ctx, waitCtx context.Context, cur *store.Tenant) (context.Context, error) {
	if m.pacer == nil || defect.On(defect.PacingInsideTimeout) {
		return ctx, nil // (the defect: the transport paces inside token_timeout)
	}
	wait := m.opts.WaitFor
	if dl, ok := waitCtx.Deadline(); ok {
		wait = time.Until(dl)
	}
	pctx, err := m.pacer.Pace(context.WithoutCancel(ctx), cur, max(wait, 0))
	if err == nil {
		return pctx, nil
	}
	retry := time.Second
	var ra interface{ RetryAfterSeconds() int }
	if errors.As(err, &ra) {
		retry = time.Duration(ra.RetryAfterSeconds()) * time.Second
	}
	m.opts.Metrics.refresh("paced")
	m.log.Warn("refresh not sent: the rate-limit governor refused it (token endpoint budget exhausted)",
		zap.String("tenant", cur.ID), zap.Duration("retry_after", retry), zap.Duration("waited_up_to", wait))
	m.observeEndpoint(ErrPaced, 0)
	return nil, &UnavailableError{Tenant: cur.ID, RetryAfter: retry, Err: fmt.Errorf("%w: %w", ErrPaced, err)}
}

// 17. leaseForSend renews the lock synchronously so that it covers a send
// starting now (the whole token request plus the write-retry interval, on
// the store's clock), then checks on the monotonic clock that the renewal
// is still fresh and, once closing, that the shutdown budget covers the
// send. An error means nothing may be sent.
func (m *Manager) leaseForSend(ctx context.Context, l *lease, tenant string) error {
	if !defect.On(defect.NoLeaseCheckBeforeSend) {
		cover := max(m.opts.LockTTL, LockTTLFor(m.opts.TokenTimeout))
		if defect.On(defect.TakeoverIgnoresSend) {
			cover = m.opts.LockTTL // (the defect: the lease need not cover the send)
		}
		start, err := l.coverSend(ctx, cover)
		if err == nil && l.wasRetaken() {
			err = m.markStillOurs(ctx, l, tenant, start)
		}
		if err == nil && !fresh(start) {
			err = fmt.Errorf("%w (took %v, at most %v)", errLeaseStale, time.Since(start).Round(time.Millisecond), sendRenewFresh)
		}
		if err != nil {
			m.opts.Metrics.refresh("lease_lost")
			m.log.Warn("refresh not sent: the lease could not be renewed to cover the send", zap.String("tenant", tenant), zap.Error(err))
			return &UnavailableError{Tenant: tenant, RetryAfter: time.Second, Err: err}
		}
	}
	return m.closingLeaves(tenant)
}

// errMarkTakenOver: the lock had been lost and taken again, and the record
// no longer carries this holder's mark: a successor took over (and may
// have sent) meanwhile; nothing was sent.
var errMarkTakenOver = errors.New("auth: the lock was lost and taken again and the in-flight mark is no longer ours; refresh token not sent")

// markStillOurs re-reads the record after the lock covering the send was
// renewed, for a lease that lost its lock and took it again while it was
// free: a successor that held the lock meanwhile replaced the mark before
// it sent anything, so the mark still being ours proves nobody sent. The
// read counts against the renewal's freshness.
func (m *Manager) markStillOurs(ctx context.Context, l *lease, tenant string, renewed time.Time) error {
	rctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), renewed.Add(sendRenewFresh))
	defer cancel()
	t, err := m.store.Get(rctx, tenant)
	if err != nil {
		return fmt.Errorf("auth: re-reading the mark after the lock was taken again: %w", err)
	}
	l.mu.Lock()
	markID := l.markID
	l.mu.Unlock()
	if markID == "" || !t.HasMark(markID) {
		return errMarkTakenOver
	}
	return nil
}

// closingLeaves refuses, once FinishRefreshes was called with a deadline,
// a mark or send that the remaining shutdown budget could not see through:
// a full token_timeout plus the write-retry interval (rule 16).
func (m *Manager) closingLeaves(tenant string) error {
	m.mu.Lock()
	closing, by := m.closing, m.closeBy
	m.mu.Unlock()
	if !closing || by.IsZero() || defect.On(defect.ShutdownLateSend) {
		return nil
	}
	need := m.opts.TokenTimeout + writeAttemptTimeout + writeRetryMax
	if left := time.Until(by); left < need {
		m.opts.Metrics.refresh("shutdown")
		m.log.Warn("refresh not sent: shutting down, the remaining budget does not cover a token request and its write",
			zap.String("tenant", tenant), zap.Duration("left", left), zap.Duration("needed", need))
		return &UnavailableError{Tenant: tenant, RetryAfter: time.Second, Err: errShuttingDown}
	}
	return nil
}

// 11. awaitTakeover decides about an earlier holder's in-flight mark. This
// process holds the lock, so that holder's lease ran out (or it let go); it
// may still live and be retrying the write of a grant. The mark is taken
// over only once this process has seen the store answer with the mark
// unchanged for the mark's grace (time the store did not answer does not
// count) and the mark is older than its holder's lease. It returns cur
// when the mark may be taken over, the newer record when it changed, or an
// error (lease lost, ctx ended).
func (m *Manager) awaitTakeover(ctx context.Context, cur *store.Tenant, l *lease) (*store.Tenant, error) {
	mk := cur.Mark()
	if mk.ID == "" && mk.StartedAt.IsZero() {
		return cur, nil // an undone mark: no holder is left to write
	}
	grace := max(m.opts.TakeoverGrace, mk.Grace)
	if mk.ID == "" {
		grace = max(grace, legacyMarkWindow)
	}
	// The lock expired on the store's clock (this process holds it now);
	// the grace is this process's own observation, on its monotonic clock.
	// No wall-clock time of the holder is compared with ours (rule 17).
	wallClock := defect.On(defect.WallClockTakeover)
	notBefore := mk.StartedAt.Add(mk.Lease) // (the defect only)
	since := time.Now()                     // cur was just read: the store answers
	b := newBackoff(50*time.Millisecond, 250*time.Millisecond)
	for {
		if !since.IsZero() && time.Since(since) >= grace && (!wallClock || !m.now().Before(notBefore)) {
			m.log.Warn("taking over an interrupted refresh", zap.String("tenant", cur.ID),
				zap.Time("marked_at", mk.StartedAt), zap.Duration("grace", grace))
			return cur, nil
		}
		if !l.held() {
			return nil, errors.New("lost the lock while waiting to take over a refresh")
		}
		if b.wait(ctx) != nil {
			return nil, errors.New("an earlier refresh may still complete")
		}
		rec, err := m.store.Get(ctx, cur.ID)
		switch {
		case err != nil:
			since = time.Time{} // unreachable: start over once it answers
		case rec.Version != cur.Version || rec.WriteID != cur.WriteID:
			return rec, nil
		case since.IsZero():
			since = time.Now()
		}
	}
}

// 14. mark records that a refresh is in flight before the refresh token
// leaves, so that a successor knows the stored token may be spent. When
// the store has replicas the mark (and the lock before it) must be
// acknowledged by them; otherwise nothing is sent.
func (m *Manager) mark(ctx context.Context, cur *store.Tenant, l *lease) (*store.Tenant, error) {
	marked := cur.Clone()
	marked.MarkRefresh(store.Mark{ID: newMarkID(), StartedAt: m.now(), Lease: m.opts.LockTTL, Grace: m.opts.TakeoverGrace})
	var err error
	if ap, ok := m.store.(store.AckedPutter); ok {
		_, err = ap.PutAcked(ctx, marked, cur.Version)
	} else {
		_, err = m.store.Put(ctx, marked, cur.Version)
	}
	if errors.Is(err, store.ErrNotAcked) {
		m.opts.Metrics.refresh("not_acked")
		m.log.Warn("refresh not sent: replicas did not acknowledge the lock and mark", zap.String("tenant", cur.ID), zap.Error(err))
		m.undoMark(ctx, marked, cur.RefreshInFlight, nil)
		return nil, &UnavailableError{Tenant: cur.ID, RetryAfter: time.Second, Err: err}
	}
	if err != nil {
		// A mark whose write reply was lost may be stored: that is safe,
		// nothing was sent, and a successor takes it over after the grace.
		return nil, m.storeErr(cur.ID, err)
	}
	l.setMark(marked.RefreshMark)
	return marked, nil
}

// 13. sendGrant sends the refresh token with a full TokenTimeout of its
// own: waiting before never shortens it, and neither callers nor shutdown
// cancel it.
func (m *Manager) sendGrant(ctx context.Context, cur *store.Tenant) (*Grant, error) {
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.opts.TokenTimeout)
	defer cancel()
	start := m.now()
	tctx, end := span(tctx, "lsproxy.token_request", cur.ID)
	sent := time.Now()
	g, err := m.execute(tctx, cur, func() (*Grant, error) { return m.refresher.Refresh(tctx, cur) })
	end(err)
	m.opts.Metrics.refreshLatency(m.now().Sub(start))
	m.observeEndpoint(err, time.Since(sent))
	return g, err
}

// 4. storeGrant writes the grant fenced on the mark. The new refresh token
// is the only valid one now, so the write is retried, without deadline,
// for as long as this process lives and the record carries its mark (rule
// 11). A record whose mark is no longer ours (a successor took over, an
// admin imported or deleted the tenant) is never overwritten.
func (m *Manager) storeGrant(ctx context.Context, marked *store.Tenant, g *Grant) (Token, error) {
	tokens := store.Tokens{Access: g.AccessToken, AccessExpiry: g.Expiry, Refresh: g.RefreshToken, RefreshExpiry: g.RefreshExpiry, Scope: g.Scope}
	next := marked.Clone()
	recovered := next.ApplyGrant(tokens, m.now())
	b := newBackoff(50*time.Millisecond, writeRetryMax)
	for attempt := 1; ; attempt++ { // unbounded on purpose: see above
		pctx, cancel := context.WithTimeout(ctx, writeAttemptTimeout)
		_, err := m.store.Put(pctx, next, marked.Version)
		if errors.Is(err, store.ErrConflict) {
			var cur *store.Tenant
			cur, err = m.store.Get(pctx, marked.ID)
			switch {
			case err == nil && cur.HasMark(marked.RefreshMark):
				// Written meanwhile with our mark kept (a rekey, our own
				// heartbeat): apply the grant to what is stored now.
				marked, next = cur, cur.Clone()
				recovered = next.ApplyGrant(tokens, m.now())
				cancel()
				continue
			case err == nil && !cur.RefreshInFlight && tokens.Access != "" && cur.AccessToken == tokens.Access &&
				(tokens.Refresh == "" || cur.RefreshToken == tokens.Refresh):
				// An earlier attempt landed but its reply was lost (it
				// timed out): the stored tokens are this grant's, which
				// nobody else has. Done.
				next = cur
			case err == nil || errors.Is(err, store.ErrNotFound):
				cancel()
				m.opts.Metrics.refresh("discarded")
				m.log.Error("refresh result discarded: the record no longer carries this refresh's mark", zap.String("tenant", marked.ID))
				if err != nil {
					return Token{}, m.storeErr(marked.ID, err)
				}
				if tok, done, err := m.useStored(cur, want{}); done {
					return tok, err
				}
				return m.staleOrUnavailable(cur, errors.New("refresh raced with another writer"))
			}
		}
		cancel()
		if err == nil {
			m.opts.Metrics.refresh("ok")
			m.log.Info("token refreshed", zap.String("tenant", next.ID), zap.Int64("version", next.Version),
				zap.Time("expires_at", next.AccessExpiresAt), zap.Int("write_attempts", attempt))
			m.guardGranted(ctx, next.ID, recovered)
			if recovered {
				m.log.Info("tenant recovered", zap.String("tenant", next.ID))
				if m.opts.OnRecover != nil {
					go m.opts.OnRecover(next.ID)
				}
			}
			return m.remember(next, nil, time.Time{}, watch{}), nil // not trusted: our write's own notification re-reads it
		}
		if !errors.Is(err, store.ErrConflict) {
			m.opts.Metrics.writeRetry()
			if attempt == 1 || attempt%30 == 0 {
				m.log.Error("refresh result not stored yet; retrying", zap.String("tenant", marked.ID), zap.Int("attempt", attempt), zap.Error(err))
			}
		}
		_ = b.wait(ctx) // ctx has no deadline: only the process's end stops this
	}
}

// 6. rejected handles invalid_grant: it flags the tenant only if a re-read
// shows the rejected refresh token is still the stored one (otherwise
// another process won the race) and the guard allows it (rule 15).
func (m *Manager) rejected(ctx context.Context, marked *store.Tenant, interrupted bool, w want) (Token, error) {
	gctx, cancel := context.WithTimeout(ctx, m.opts.WaitFor)
	defer cancel()
	// The rejection is known only here until it is stored: a store call
	// that fails is tried again (bounded by WaitFor), else the mark stays
	// and the next takeover sends the rejected token again (found by the
	// simulation, auth/sim).
	b := newBackoff(50*time.Millisecond, writeRetryMax)
	cur, err := m.store.Get(gctx, marked.ID)
	for err != nil && !errors.Is(err, store.ErrNotFound) && b.wait(gctx) == nil {
		cur, err = m.store.Get(gctx, marked.ID)
	}
	if err != nil {
		return Token{}, m.storeErr(marked.ID, err)
	}
	if cur.RefreshToken != marked.RefreshToken {
		m.opts.Metrics.refresh("lost_race")
		if tok, done, err := m.useStored(cur, want{}); done {
			return tok, err
		}
		return m.staleOrUnavailable(cur, errors.New("refresh raced with another writer"))
	}
	reason := "refresh token rejected by the provider (invalid_grant)"
	if interrupted {
		reason = ReasonInterrupted
	}
	now := m.now()
	flag, trips := m.consultGuard(ctx, cur.ID, w.retry, now)
	// An interrupted refresh's rejection is explained by its own lost
	// answer (the holder's request most likely consumed the token): it
	// counts towards the guard's window like any rejection but, like an
	// operator's retry, the guard neither holds it nor reverts its flag.
	// Held or reverted, the tenant stays active on a spent token that
	// every probe sends again (found by the simulation, auth/sim). The
	// price: a lost answer followed by a rejection that was in fact the
	// configuration's flags the tenant; POST .../retry recovers it.
	exempt := w.retry || interrupted
	flag = flag || interrupted
	if !flag {
		return m.staleOrUnavailable(m.undoMark(ctx, marked, interrupted, errGuardHeld), errGuardHeld)
	}
	flag1 := func() (*store.Tenant, error) {
		return store.Update(gctx, m.store, cur.ID, func(t *store.Tenant) error {
			if t.RefreshToken != marked.RefreshToken {
				return errRaced
			}
			t.Flag(reason, now)
			return nil
		})
	}
	flagged, err := flag1()
	for err != nil && !errors.Is(err, errRaced) && !errors.Is(err, store.ErrNotFound) && b.wait(gctx) == nil {
		flagged, err = flag1()
	}
	if errors.Is(err, errRaced) {
		return m.acquireAgain(gctx, marked.ID)
	}
	if err != nil {
		return Token{}, m.storeErr(marked.ID, err)
	}
	if !m.flagRecorded(ctx, cur.ID, now, trips, exempt) { // it tripped during the write
		if rec := m.revertOwn(ctx, cur.ID, now); rec != nil {
			cur = rec
		}
		m.opts.Metrics.refresh("held")
		m.opts.Metrics.held()
		return m.staleOrUnavailable(cur, errGuardHeld)
	}
	m.opts.Metrics.refresh("invalid_grant")
	m.opts.Metrics.flagged()
	m.log.Warn("tenant flagged for reauthorization", zap.String("tenant", cur.ID), zap.String("reason", reason))
	if m.opts.OnFlag != nil {
		go m.opts.OnFlag(cur.ID, reason)
	}
	re := &ReauthError{Tenant: cur.ID, Reason: reason, Since: now}
	m.remember(flagged, re, time.Time{}, watch{})
	return Token{}, re
}

// ReasonInterrupted is the flag reason when a takeover's refresh token was
// rejected: the interrupted holder's request had consumed it.
const ReasonInterrupted = "refresh token consumed by an interrupted refresh"

// 7. undoMark removes this refresh's mark after it failed without
// consuming the refresh token (a non-nil failure is counted and recorded
// in the history in fixed words), or before anything was sent. It never touches a mark that is not ours, and returns the record
// as it is known after the attempt.
func (m *Manager) undoMark(ctx context.Context, marked *store.Tenant, interrupted bool, failure error) *store.Tenant {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeCallTimeout)
	defer cancel()
	next, err := store.Update(pctx, m.store, marked.ID, func(t *store.Tenant) error {
		if !t.HasMark(marked.RefreshMark) {
			return store.ErrSkip
		}
		failures := t.FailureCount
		t.UndoMark(interrupted, m.now())
		if failure == nil {
			t.FailureCount = failures
		} else {
			t.Record(m.now(), store.EventRefreshFailed, failureReason(failure))
		}
		return nil
	})
	if err != nil {
		return marked
	}
	return next
}

// acquireAgain re-reads after a race lost at the last moment.
func (m *Manager) acquireAgain(ctx context.Context, tenant string) (Token, error) {
	cur, err := m.store.Get(ctx, tenant)
	if err != nil {
		return Token{}, m.storeErr(tenant, err)
	}
	m.opts.Metrics.refresh("lost_race")
	if tok, done, err := m.useStored(cur, want{}); done {
		return tok, err
	}
	return m.staleOrUnavailable(cur, errors.New("refresh raced with another writer"))
}

// errRaced: the record changed under a decision made on an older read.
var errRaced = errors.New("auth: tenant record changed meanwhile")

// errGuardHeld: an invalid_grant was not acted on (see grantGuard).
var errGuardHeld = errors.New("the token endpoint rejects the refresh tokens of many tenants: not acted on, tokens kept (check client id, secret, environment, token URL)")
