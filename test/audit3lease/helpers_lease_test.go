// Package audit3lease_test holds the third audit's reproductions of the lease,
// pacing, split-brain and shutdown interleavings (black-box: auth, store,
// ratelimit and the emulator together; SPEC §3 rules 13, 14, 16-18).
package audit3lease_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/store"
)

func keys(t *testing.T) *store.Keyring {
	t.Helper()
	k, err := store.NewKeyring([]byte(strings.Repeat("a", 32)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func boltStore(t *testing.T) *store.Bolt {
	t.Helper()
	s, err := store.OpenBolt(t.TempDir(), keys(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func oauthClient(emu *emulator.Emulator, url string, timeout time.Duration, hc *http.Client) *auth.OAuthClient {
	cfg := emu.Config()
	return &auth.OAuthClient{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		TokenURL: url + emu.Paths().Token, AuthStyle: oauth2.AuthStyleInHeader, Timeout: timeout, HTTPClient: hc}
}

// putTenant stores tenant id with a fresh emulator grant whose access token
// has expired (the next Token refreshes).
func putTenant(t *testing.T, s store.Store, emu *emulator.Emulator, id string) emulator.Grant {
	t.Helper()
	g := emu.IssueGrant(id)
	if _, err := s.Put(context.Background(), &store.Tenant{ID: id, Status: store.StatusActive, AccessToken: g.AccessToken,
		RefreshToken: g.RefreshToken, AccessExpiresAt: time.Now().Add(-time.Second), CreatedAt: time.Now()}, 0); err != nil {
		t.Fatal(err)
	}
	return g
}

// recRefresher wraps a Refresher and records each call's start and end.
type recRefresher struct {
	auth.Refresher
	name string
	log  *eventLog
	// before, when set, runs before the call is passed on; after, when
	// set, runs when its answer arrived.
	before     func(t *store.Tenant)
	after      func()
	answered   atomic.Int64
	sentAt     atomic.Int64 // unix ns of the first call
	answeredAt atomic.Int64 // unix ns of the first answer
}

func (r *recRefresher) Refresh(ctx context.Context, t *store.Tenant) (*auth.Grant, error) {
	if r.before != nil {
		r.before(t)
	}
	r.log.add(r.name + " sends " + t.RefreshToken[:12])
	r.sentAt.CompareAndSwap(0, time.Now().UnixNano())
	g, err := r.Refresher.Refresh(ctx, t)
	if r.after != nil {
		r.after()
	}
	r.answeredAt.CompareAndSwap(0, time.Now().UnixNano())
	r.answered.Add(1)
	if err != nil {
		r.log.add(r.name + " answered: " + err.Error())
	} else {
		r.log.add(r.name + " answered: grant")
	}
	return g, err
}

type eventLog struct {
	mu    sync.Mutex
	start time.Time
	lines []string
}

func newEventLog() *eventLog { return &eventLog{start: time.Now()} }

func (l *eventLog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, time.Since(l.start).Round(10*time.Millisecond).String()+" "+s)
}

func (l *eventLog) dump(t *testing.T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		t.Log(s)
	}
}
