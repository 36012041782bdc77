package control

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/lsproxy/lsproxy/store"
)

// Console session defaults.
const (
	// DefaultConsoleIdle is how long a console session lasts without an
	// operator action (Server.ConsoleIdle = 0).
	DefaultConsoleIdle = 15 * time.Minute
	// consoleMaxAge bounds a session however active its operator is.
	consoleMaxAge = 12 * time.Hour
	// sessionTouchAfter: a session is re-issued (its idle clock reset) at
	// most this often (or a quarter of the idle timeout, if shorter), so
	// that a page full of requests sets one cookie.
	sessionTouchAfter = 10 * time.Second
)

var (
	errNoSession      = errors.New("control: no console session")
	errSessionExpired = errors.New("control: console session expired")
	errSessionInvalid = errors.New("control: console session cookie invalid")
)

// session is what the console cookie carries, signed with the session key.
// It holds no token: the operator's name, a random id (the CSRF token is
// derived from it) and timestamps. A signed cookie is not enough: its id
// must also name a live record in the store (sign-out deletes it).
type session struct {
	Operator string `json:"op"`
	ID       string `json:"sid"`
	Issued   int64  `json:"iat"`  // unix seconds: sign-in
	Seen     int64  `json:"seen"` // unix seconds: last operator action (idle clock)
}

// sessions signs and checks console session cookies and keeps each
// session's record in the store (store.Sessions), with the idle timeout as
// its lifetime, so that every replica sharing the store accepts a session
// any of them issued and signing out on one ends it on all. The signing key
// is derived from the session key (from the encryption key, see
// cmd/lsproxy) and the admin token: rotating the admin token ends every
// session. It is immutable after construction and safe for concurrent use.
type sessions struct {
	key   []byte
	idle  time.Duration
	now   func() time.Time
	store store.Sessions
}

func newSessions(key []byte, adminToken string, st store.Sessions, idle time.Duration, now func() time.Time) *sessions {
	if len(key) == 0 {
		// No key configured: sessions work on this process only.
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	}
	if idle <= 0 {
		idle = DefaultConsoleIdle
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("lsproxy/console-session-key/v2\x00"))
	m.Write([]byte(adminToken))
	if st == nil {
		st = newMemSessions(now)
	}
	return &sessions{key: m.Sum(nil), idle: idle, now: now, store: st}
}

// recordKey is the store key of a session: a hash of its id, so that the
// store holds nothing a cookie could be made from.
func recordKey(id string) string {
	h := sha256.Sum256([]byte("lsproxy/console-session-record\x00" + id))
	return hex.EncodeToString(h[:])
}

// cookieName is __Secure- prefixed on TLS (the browser then refuses it
// over plain HTTP).
func cookieName(r *http.Request) string {
	if r.TLS != nil {
		return "__Secure-lsproxy-console"
	}
	return "lsproxy-console"
}

func (s *sessions) mac(label string, payload []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write(payload)
	return m.Sum(nil)
}

// start returns a new session for operator.
func (s *sessions) start(operator string) session {
	var id [16]byte
	_, _ = rand.Read(id[:])
	now := s.now().Unix()
	return session{Operator: operator, ID: hex.EncodeToString(id[:]), Issued: now, Seen: now}
}

// set writes sess as the session cookie: HttpOnly, SameSite=Strict, Secure
// on TLS, scoped to /console/. It is a browser-session cookie (no Max-Age):
// the server enforces the idle timeout, so that an expired session is
// answered as such rather than as never signed in.
//
// It writes the session's record first (renewing its lifetime); when the
// store fails, no cookie is set and the error is returned.
func (s *sessions) set(w http.ResponseWriter, r *http.Request, sess session) error {
	if err := s.store.PutSession(r.Context(), recordKey(sess.ID), []byte(sess.Operator), s.idle); err != nil {
		return err
	}
	payload, _ := json.Marshal(sess)
	v := "v1." + base64.RawURLEncoding.EncodeToString(payload) + "." +
		base64.RawURLEncoding.EncodeToString(s.mac("lsproxy/console-session/v1", payload))
	http.SetCookie(w, &http.Cookie{
		Name: cookieName(r), Value: v, Path: "/console/",
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	return nil
}

// end deletes the session's record (every copy of its cookie is dead) and
// removes the cookie.
func (s *sessions) end(w http.ResponseWriter, r *http.Request, sess session) error {
	err := s.store.DeleteSession(r.Context(), recordKey(sess.ID))
	s.clear(w, r)
	return err
}

// clear removes the session cookie.
func (s *sessions) clear(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: cookieName(r), Value: "", Path: "/console/", MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
}

// get returns the request's session: errNoSession without a cookie,
// errSessionInvalid for a cookie this key did not sign (also one signed
// before the admin token changed), errSessionExpired after the idle timeout
// or the maximum age, or when its record is gone (signed out, expired in
// the store). A store failure is returned as is.
func (s *sessions) get(r *http.Request) (session, error) {
	c, err := r.Cookie(cookieName(r))
	if err != nil || c.Value == "" {
		return session{}, errNoSession
	}
	parts := strings.Split(c.Value, ".")
	if len(parts) != 3 || parts[0] != "v1" {
		return session{}, errSessionInvalid
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err2 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || !hmac.Equal(sig, s.mac("lsproxy/console-session/v1", payload)) {
		return session{}, errSessionInvalid
	}
	var sess session
	if json.Unmarshal(payload, &sess) != nil || sess.ID == "" || !validOperator(sess.Operator) {
		return session{}, errSessionInvalid
	}
	now := s.now()
	if now.Sub(time.Unix(sess.Seen, 0)) > s.idle || now.Sub(time.Unix(sess.Issued, 0)) > consoleMaxAge {
		return session{}, errSessionExpired
	}
	op, err := s.store.GetSession(r.Context(), recordKey(sess.ID))
	if errors.Is(err, store.ErrNotFound) {
		return session{}, errSessionExpired
	}
	if err != nil {
		return session{}, err
	}
	if string(op) != sess.Operator {
		return session{}, errSessionInvalid
	}
	return sess, nil
}

// touch resets the idle clock of sess (re-issuing the cookie) when it is
// older than sessionTouchAfter.
func (s *sessions) touch(w http.ResponseWriter, r *http.Request, sess session) {
	now := s.now()
	if now.Sub(time.Unix(sess.Seen, 0)) < min(sessionTouchAfter, s.idle/4) {
		return
	}
	sess.Seen = now.Unix()
	_ = s.set(w, r, sess) // a failed renewal leaves the session as it was
}

// csrf is the synchronizer token of sess: every console form carries it
// and every action checks it (with hmac.Equal).
func (s *sessions) csrf(sess session) string {
	return base64.RawURLEncoding.EncodeToString(s.mac("lsproxy/console-csrf/v1", []byte(sess.ID)))
}

func (s *sessions) csrfOK(sess session, got string) bool {
	return got != "" && hmac.Equal([]byte(got), []byte(s.csrf(sess)))
}

// validOperator: the name an operator signs in with, as written to the
// audit log: ^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$.
func validOperator(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || (c != '.' && c != '_' && c != '@' && c != '-')) {
			return false
		}
	}
	return true
}

// memSessions is the in-process store.Sessions for a Store that does not
// keep sessions (test fakes): sessions then live on this process only.
type memSessions struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]memSession
}

type memSession struct {
	v   []byte
	exp time.Time
}

func newMemSessions(now func() time.Time) *memSessions {
	return &memSessions{now: now, m: map[string]memSession{}}
}

func (m *memSessions) PutSession(_ context.Context, key string, value []byte, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for k, v := range m.m {
		if !now.Before(v.exp) {
			delete(m.m, k)
		}
	}
	m.m[key] = memSession{v: append([]byte(nil), value...), exp: now.Add(ttl)}
	return nil
}

func (m *memSessions) GetSession(_ context.Context, key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.m[key]
	if !ok || !m.now().Before(v.exp) {
		return nil, store.ErrNotFound
	}
	return v.v, nil
}

func (m *memSessions) DeleteSession(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, key)
	return nil
}
