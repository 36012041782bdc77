package sim

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/ratelimit"
)

// The fake OAuth token endpoint: single-use refresh tokens that rotate on
// every grant, committed when the request arrives; answers chosen by seed
// (fast, slow but within token_timeout, slower than token_timeout, the
// connection reset after the commit, 503 and 429 before it, no answer at
// all); merchant revocation; a process with wrong credentials gets
// invalid_grant for everything. It records every grant and every send of a
// refresh token for the invariants.

type tokState int

const (
	tokValid tokState = iota + 1
	tokSpent
	tokRevoked
)

type rtok struct {
	tenant  string
	state   tokState
	spentBy *grant
	resends int // sends after it was spent
}

type accessTok struct {
	tenant string
	exp    time.Time
}

// grant is one committed refresh: from → to.
type grant struct {
	tenant, from, to string
	proc             *proc
	at               time.Time
	timeout          time.Duration // what the request had left when it was sent
	outcome          string        // "" while out; "delivered", or "lost:<why>"
	outcomeAt        time.Time
}

// lostExcused reports whether a lost answer is one the protocol cannot
// prevent: the network or the provider lost it, the provider answered
// after token_timeout, or the holder was killed.
func (g *grant) lostExcused() bool { return excusedLoss(g.outcome) }

func excusedLoss(outcome string) bool {
	switch outcome {
	case "lost:net", "lost:slow", "lost:kill":
		return true
	}
	return false
}

// resend is a send of a spent refresh token.
type resend struct {
	tenant, tok string
	proc        *proc
	at          time.Time
	g           *grant // the grant that spent it
	nth         int
	outcome     string    // as grant.outcome: was its rejection seen?
	outcomeAt   time.Time // when the rejection reached the process (delivered)
	byRetry     bool      // sent while an operator retry of the tenant ran
}

// rejection is an invalid_grant answer (for the guard's allowance).
type rejection struct {
	tenant, cause string
	tok           string // the refresh token rejected
	at            time.Time
	local         time.Time // at on the sending process's clock
	delivered     bool      // the answer reached the process (the guard could count it)
	// localDelivered is when it reached the process, on its clock: the
	// guard's window counts a rejection from about then.
	localDelivered time.Time
}

type provider struct {
	w *world

	mu         sync.Mutex
	toks       map[string]*rtok
	access     map[string]accessTok
	n          map[string]int // tenant → tokens issued
	grants     []*grant
	resends    []*resend
	rejections []rejection
	attempts   map[string]int // refresh token → requests seen
	sends      int
}

func newProvider(w *world) *provider {
	return &provider{w: w, toks: map[string]*rtok{}, access: map[string]accessTok{}, n: map[string]int{}, attempts: map[string]int{}}
}

// newChain issues a fresh grant for tenant (an authorization): its refresh
// token and an access token valid for life.
func (pv *provider) newChain(tenant string, life time.Duration) (rt, at string) {
	pv.mu.Lock()
	defer pv.mu.Unlock()
	return pv.issueLocked(tenant, life)
}

func (pv *provider) issueLocked(tenant string, life time.Duration) (rt, at string) {
	pv.n[tenant]++
	k := pv.n[tenant]
	rt = fmt.Sprintf("rt.%s.%d", tenant, k)
	at = fmt.Sprintf("at.%s.%d", tenant, k)
	pv.toks[rt] = &rtok{tenant: tenant, state: tokValid}
	pv.access[at] = accessTok{tenant: tenant, exp: time.Now().Add(life)}
	return rt, at
}

// revoke revokes every refresh token of tenant (the merchant disconnected).
func (pv *provider) revoke(tenant string) {
	pv.mu.Lock()
	defer pv.mu.Unlock()
	for _, t := range pv.toks {
		if t.tenant == tenant && t.state == tokValid {
			t.state = tokRevoked
		}
	}
}

func (pv *provider) valid(rt string) bool {
	pv.mu.Lock()
	defer pv.mu.Unlock()
	t := pv.toks[rt]
	return t != nil && t.state == tokValid
}

func (pv *provider) state(rt string) (tokState, string) {
	pv.mu.Lock()
	defer pv.mu.Unlock()
	t := pv.toks[rt]
	if t == nil {
		return 0, ""
	}
	return t.state, t.tenant
}

// accessOK reports whether at is an unexpired access token of tenant,
// and whose it is.
func (pv *provider) accessOK(at string) (owner string, ok bool) {
	pv.mu.Lock()
	defer pv.mu.Unlock()
	a, found := pv.access[at]
	if !found {
		return "", false
	}
	return a.tenant, time.Now().Before(a.exp)
}

// answer kinds
const (
	ansOK = iota
	ansSlowOK
	ansTooSlow
	ansResetAfterCommit
	ans503
	ans429
	ansHang
)

var answerNames = [...]string{"ok", "slow-ok", "too-slow", "reset-after-commit", "503", "429", "no-answer"}

// transport is one process's HTTP connection to the token endpoint.
type transport struct {
	pv *provider
	p  *proc
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	pv, p, w := t.pv, t.p, t.pv.w
	if dead, _ := p.isDead(); dead {
		dieNow()
	}
	ctx := req.Context()
	body, _ := io.ReadAll(req.Body)
	_ = req.Body.Close()
	form, _ := url.ParseQuery(string(body))
	rt := form.Get("refresh_token")
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// From here the request is written: the refresh token has left.
	if tr := httptrace.ContextClientTrace(ctx); tr != nil && tr.WroteRequest != nil {
		tr.WroteRequest(httptrace.WroteRequestInfo{})
	}
	sentAt := time.Now()
	left := w.opts.TokenTimeout
	if dl, ok := ctx.Deadline(); ok {
		left = dl.Sub(sentAt)
	}

	pv.mu.Lock()
	pv.sends++
	pv.attempts[rt]++
	kind := w.pickAnswer(rt, pv.attempts[rt])
	tok := pv.toks[rt]
	var g *grant
	var rs *resend
	rejIdx := -1
	status, delay := 0, w.answerDelay(kind, rt, pv.attempts[rt])
	var payload string
	var hdr http.Header
	switch {
	case tok == nil:
		pv.mu.Unlock()
		w.violatef("e", "%s sent a refresh token the provider never issued", p.name)
		return jsonResp(req, 400, `{"error":"invalid_grant"}`, nil), nil
	case p.misconfigured:
		status, payload = 400, `{"error":"invalid_grant","error_description":"client authentication failed"}`
		rejIdx = len(pv.rejections)
		pv.rejections = append(pv.rejections, rejection{tenant: tok.tenant, cause: "misconfig", tok: rt, at: sentAt, local: sentAt.Add(p.skew)})
		w.tracef("provider: %s: %s rejected: wrong client credentials (misconfigured process)", p.name, rt)
	case kind == ans503:
		status, payload = 503, `{"error":"temporarily_unavailable"}`
	case kind == ans429:
		status, payload = 429, `{"error":"rate_limited"}`
		hdr = http.Header{"Retry-After": {strconv.Itoa(w.retryAfter(rt, pv.attempts[rt]))}}
	case kind == ansHang:
		// never answers, commits nothing
	case tok.state == tokSpent:
		tok.resends++
		rs = &resend{tenant: tok.tenant, tok: rt, proc: p, at: sentAt, g: tok.spentBy, nth: tok.resends, byRetry: w.retryRunning(p, tok.tenant)}
		pv.resends = append(pv.resends, rs)
		status, payload = 400, `{"error":"invalid_grant","error_description":"refresh token already used"}`
		rejIdx = len(pv.rejections)
		pv.rejections = append(pv.rejections, rejection{tenant: tok.tenant, cause: "spent", tok: rt, at: sentAt, local: sentAt.Add(p.skew)})
		w.tracef("provider: %s re-sent the spent %s (spent by %s's grant at %s)", p.name, rt, tok.spentBy.proc.name, w.ts(tok.spentBy.at))
	case tok.state == tokRevoked:
		status, payload = 400, `{"error":"invalid_grant","error_description":"revoked"}`
		rejIdx = len(pv.rejections)
		pv.rejections = append(pv.rejections, rejection{tenant: tok.tenant, cause: "revoked", tok: rt, at: sentAt, local: sentAt.Add(p.skew)})
		w.tracef("provider: %s: %s rejected: revoked", p.name, rt)
	default: // valid: commit now
		life := w.accessLife(rt)
		nrt, nat := pv.issueLocked(tok.tenant, life)
		tok.state = tokSpent
		g = &grant{tenant: tok.tenant, from: rt, to: nrt, proc: p, at: sentAt, timeout: left}
		tok.spentBy = g
		pv.grants = append(pv.grants, g)
		if kind != ansResetAfterCommit {
			status = 200
			payload = fmt.Sprintf(`{"access_token":%q,"token_type":"bearer","expires_in":%d,"refresh_token":%q}`, nat, int(life/time.Second), nrt)
		}
		w.tracef("provider: %s: grant %s → %s committed (answer %s in %s; request had %s left)", p.name, rt, nrt, answerNames[kind], delay, left.Round(time.Millisecond))
	}
	pv.mu.Unlock()
	if g != nil || tok != nil {
		p.fire(trigSend)
	}

	lose := func(why string) {
		if rs != nil {
			pv.mu.Lock()
			rs.outcome = why
			pv.mu.Unlock()
		}
		if g == nil {
			return
		}
		pv.mu.Lock()
		g.outcome, g.outcomeAt = why, time.Now()
		pv.mu.Unlock()
		w.tracef("provider: answer of grant %s → %s lost (%s)", g.from, g.to, why)
	}
	// The answer travels back.
	timer := time.NewTimer(delay)
	defer timer.Stop()
	if kind == ansHang {
		timer.Stop()
	}
	for waiting := true; waiting; {
		p.mu.Lock()
		ch, dead, cause := p.changed, p.dead, p.exitCause
		p.mu.Unlock()
		if dead {
			lose("lost:" + cause)
			dieNow()
		}
		select {
		case <-timer.C:
			waiting = false
		case <-ctx.Done():
			why := "lost:slow"
			if time.Since(sentAt) < w.opts.TokenTimeout-50*time.Millisecond {
				why = "lost:early" // the client gave up before token_timeout
			}
			lose(why)
			return nil, ctx.Err()
		case <-ch:
		}
	}
	// A paused client reads the answer when it resumes.
	p.mu.Lock()
	paused := p.paused
	p.mu.Unlock()
	if paused {
		waitPause(p, func(cause string) { lose("lost:" + cause) })
		if ctx.Err() != nil {
			lose("lost:slow") // frozen past its timeout: as a slow network
			return nil, ctx.Err()
		}
	}
	if g != nil && kind == ansResetAfterCommit {
		lose("lost:net")
		return nil, fmt.Errorf("read tcp: connection reset by peer")
	}
	pv.mu.Lock()
	if g != nil {
		g.outcome, g.outcomeAt = "delivered", time.Now()
	}
	if rs != nil {
		rs.outcome, rs.outcomeAt = "delivered", time.Now()
	}
	if rejIdx >= 0 {
		pv.rejections[rejIdx].delivered = true
		pv.rejections[rejIdx].localDelivered = time.Now().Add(p.skew)
	}
	pv.mu.Unlock()
	if g != nil {
		p.set(func() { p.answered, p.answeredSent = g.tenant, g.at })
		p.fire(trigAnswer)
	}
	return jsonResp(req, status, payload, hdr), nil
}

// waitPause waits for p's pause to end; if p dies meanwhile, onDeath runs
// and the goroutine ends.
func waitPause(p *proc, onDeath func(cause string)) {
	for {
		p.mu.Lock()
		ch, dead, cause, paused := p.changed, p.dead, p.exitCause, p.paused
		p.mu.Unlock()
		if dead {
			onDeath(cause)
			dieNow()
		}
		if !paused {
			return
		}
		<-ch
	}
}

func jsonResp(req *http.Request, status int, body string, hdr http.Header) *http.Response {
	h := http.Header{"Content-Type": {"application/json"}}
	for k, v := range hdr {
		h[k] = v
	}
	return &http.Response{StatusCode: status, Status: strconv.Itoa(status) + " " + http.StatusText(status),
		Header: h, Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: req,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
}

// tokenURL is the fake endpoint's address (never dialled).
const tokenURL = "https://token.sim.invalid/oauth/token"

// oauthClient is how a process talks to the token endpoint, wired as
// cmd/lsproxy serve wires it: the OAuth client over the token-endpoint
// pacing (ratelimit.TokenTransport, one budget shared by every replica)
// over the connection. This is the one place to adapt when the pacing
// moves (SPEC §3 rule 18).
func (w *world) oauthClient(p *proc) auth.Refresher {
	gov := &ratelimit.Governor{Backend: w.rateBackend}
	var rt http.RoundTripper = &transport{pv: w.prov, p: p}
	rt = &ratelimit.TokenTransport{Governor: gov, Base: rt}
	secret := "sim-secret"
	if p.misconfigured {
		secret = "sim-wrong-secret" // what the provider rejects (see roundTrip)
	}
	return &auth.OAuthClient{
		ClientID: "sim", ClientSecret: secret, TokenURL: tokenURL,
		AuthStyle: oauth2.AuthStyleInParams, Timeout: w.opts.TokenTimeout,
		HTTPClient: &http.Client{Transport: rt},
	}
}

// retryRunning reports whether an operator retry of tenant is in progress
// in p (a retry in one process says nothing of another's send).
func (w *world) retryRunning(p *proc, tenant string) bool {
	n, ok := w.retrying.Load(p.name + "/" + tenant)
	return ok && n.(*atomic.Int32).Load() > 0
}
