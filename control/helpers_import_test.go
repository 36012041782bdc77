package control_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/store"
)

// Helpers of the black-box admin tests (package control_test: control,
// auth, store and the emulator together).

func importKeys(t *testing.T) *store.Keyring {
	t.Helper()
	k, err := store.NewKeyring([]byte(strings.Repeat("a", 32)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func importBoltStore(t *testing.T) *store.Bolt {
	t.Helper()
	s, err := store.OpenBolt(t.TempDir(), importKeys(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func importOAuthClient(emu *emulator.Emulator, url string, timeout time.Duration, hc *http.Client) *auth.OAuthClient {
	cfg := emu.Config()
	return &auth.OAuthClient{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		TokenURL: url + emu.Paths().Token, AuthStyle: oauth2.AuthStyleInHeader, Timeout: timeout, HTTPClient: hc}
}
