package proxy

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"

	"github.com/lsproxy/lsproxy/store"
)

// ClientKey is one caller key: its id (for logs), the SHA-256 of the key and
// the tenants it may use (exact ids, "prefix*" patterns, or "*").
type ClientKey struct {
	ID      string
	Hash    [sha256.Size]byte
	Tenants []string
}

// Allows reports whether the key may use tenant.
func (k *ClientKey) Allows(tenant string) bool {
	for _, p := range k.Tenants {
		if p == tenant || p == "*" || (strings.HasSuffix(p, "*") && strings.HasPrefix(tenant, p[:len(p)-1])) {
			return true
		}
	}
	return false
}

// ParseClientKeys parses "id:sha256hex:tenant1,prefix*" entries (as printed
// by `lsproxy hash-key`). Errors name the entry's position and id, never a hash.
func ParseClientKeys(raw []string) ([]ClientKey, error) {
	keys := make([]ClientKey, 0, len(raw))
	seen := map[string]bool{}
	for i, entry := range raw {
		parts := strings.SplitN(entry, ":", 3)
		if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
			return nil, fmt.Errorf("proxy: client key #%d: want id:sha256hex:tenants", i+1)
		}
		k := ClientKey{ID: parts[0]}
		h, err := hex.DecodeString(parts[1])
		if err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("proxy: client key #%d (%s): the hash must be 64 hex digits (see lsproxy hash-key)", i+1, k.ID)
		}
		copy(k.Hash[:], h)
		if seen[k.ID] {
			return nil, fmt.Errorf("proxy: client key #%d: duplicate id %q", i+1, k.ID)
		}
		seen[k.ID] = true
		for _, p := range strings.Split(parts[2], ",") {
			p = strings.TrimSpace(p)
			if p != "*" && !store.ValidTenantID(strings.TrimSuffix(p, "*")) {
				return nil, fmt.Errorf("proxy: client key #%d (%s): bad tenant pattern %q", i+1, k.ID, p)
			}
			k.Tenants = append(k.Tenants, p)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// CallerAuth authenticates callers by Proxy-Authorization: Bearer <key>.
// Safe for concurrent use once built.
type CallerAuth struct {
	byHash map[[sha256.Size]byte]*ClientKey
}

// NewCallerAuth indexes keys by hash. Keys are random 256-bit values, so a
// plain SHA-256 lookup is as strong as a slow hash and costs nothing per request.
func NewCallerAuth(keys []ClientKey) *CallerAuth {
	a := &CallerAuth{byHash: make(map[[sha256.Size]byte]*ClientKey, len(keys))}
	for i := range keys {
		a.byHash[keys[i].Hash] = &keys[i]
	}
	return a
}

// Authenticate is a Handler.Authenticate hook. It returns the key's id
// (also when the key may not use tenant), and ErrProxyAuthRequired for a
// missing or unknown key or ErrTenantNotAllowed when the key may not use
// tenant.
func (a *CallerAuth) Authenticate(r *http.Request, tenant string) (string, error) {
	k, err := a.key(r)
	if err != nil {
		return "", err
	}
	if !k.Allows(tenant) {
		return k.ID, ErrTenantNotAllowed
	}
	return k.ID, nil
}

// Caller is a Handler.Caller hook: the key's id and which tenants it may
// use, or ErrProxyAuthRequired for a missing or unknown key.
func (a *CallerAuth) Caller(r *http.Request) (string, func(tenant string) bool, error) {
	k, err := a.key(r)
	if err != nil {
		return "", nil, err
	}
	return k.ID, k.Allows, nil
}

func (a *CallerAuth) key(r *http.Request) (*ClientKey, error) {
	const prefix = "Bearer "
	h := r.Header.Get("Proxy-Authorization")
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return nil, ErrProxyAuthRequired
	}
	k, ok := a.byHash[sha256.Sum256([]byte(h[len(prefix):]))]
	if !ok {
		return nil, ErrProxyAuthRequired
	}
	return k, nil
}

// NewClientKey returns a new random key (prefixed "lsk_") and its hex SHA-256.
func NewClientKey() (key, hash string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", err
	}
	key = "lsk_" + base64.RawURLEncoding.EncodeToString(b[:])
	return key, HashClientKey(key), nil
}

// HashClientKey returns the hex SHA-256 of key, as configured in client_keys.
func HashClientKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}
