package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the length of an encryption key in bytes (AES-256).
const KeySize = 32

const nonceSize = 12 // standard GCM nonce

// Keyring holds the AES-256-GCM keys that seal tokens at rest. The first key
// seals; every key opens what it sealed, found by the key id stored beside
// the ciphertext, so a key can be rotated by putting the new key first and
// keeping the old one until every record has been rewritten.
//
// A Keyring is immutable and safe for concurrent use.
type Keyring struct {
	keys []ringKey // keys[0] seals
}

type ringKey struct {
	id   string
	aead cipher.AEAD
}

// NewKeyring returns a keyring whose first key seals. Every key must be
// exactly 32 bytes; at least one is required; a key given again is ignored.
// The keys are copied into AES ciphers; the caller may wipe its slices.
func NewKeyring(keys ...[]byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("store: at least one encryption key is required")
	}
	kr := &Keyring{keys: make([]ringKey, 0, len(keys))}
	seen := make(map[[sha256.Size]byte]bool, len(keys))
	for _, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("store: encryption key must be %d bytes, got %d", KeySize, len(k))
		}
		sum := sha256.Sum256(k)
		if seen[sum] {
			continue // the same key listed again (e.g. also among the old keys)
		}
		seen[sum] = true
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("store: encryption key: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("store: encryption key: %w", err)
		}
		kr.keys = append(kr.keys, ringKey{id: hex.EncodeToString(sum[:4]), aead: aead})
	}
	return kr, nil
}

// ParseKeys decodes base64 keys (standard or URL alphabet, padded or not,
// surrounding white space ignored) and returns NewKeyring of them, first key
// sealing. Errors name a key by its position, never by its value.
func ParseKeys(b64 ...string) (*Keyring, error) {
	if len(b64) == 0 {
		return nil, errors.New("store: at least one encryption key is required")
	}
	raw := make([][]byte, 0, len(b64))
	for i, s := range b64 {
		s = strings.TrimRight(strings.TrimSpace(s), "=")
		if s == "" {
			return nil, fmt.Errorf("store: encryption key %d of %d is empty", i+1, len(b64))
		}
		enc := base64.RawStdEncoding
		if strings.ContainsAny(s, "-_") {
			enc = base64.RawURLEncoding
		}
		k, err := enc.DecodeString(s)
		if err != nil {
			// The decoder's error holds only a byte offset, never key material.
			return nil, fmt.Errorf("store: encryption key %d of %d is not valid base64: %w", i+1, len(b64), err)
		}
		if len(k) != KeySize {
			return nil, fmt.Errorf("store: encryption key %d of %d must be %d bytes, got %d (generate one with: openssl rand -base64 32)",
				i+1, len(b64), KeySize, len(k))
		}
		raw = append(raw, k)
	}
	return NewKeyring(raw...)
}

// PrimaryID returns the id of the sealing key: the first 8 hex characters of
// the SHA-256 of the key. Safe to log.
func (k *Keyring) PrimaryID() string {
	if k == nil || len(k.keys) == 0 {
		return ""
	}
	return k.keys[0].id
}

// IDs returns the ids of all keys, sealing key first. Safe to log.
func (k *Keyring) IDs() []string {
	if k == nil {
		return nil
	}
	ids := make([]string, len(k.keys))
	for i, rk := range k.keys {
		ids[i] = rk.id
	}
	return ids
}

// sealed is a token as stored: the id of the key that sealed it and
// base64(nonce | ciphertext | tag).
type sealed struct {
	KID string `json:"kid"`
	CT  string `json:"ct"`
}

// associatedData binds a ciphertext to its tenant and field, so a sealed
// token copied to another tenant or field does not open. The field name
// (fixed, without NUL) ends the string, which keeps the encoding unambiguous
// for any tenant id.
func associatedData(tenant, field string) []byte {
	return []byte("lsproxy/v1\x00" + tenant + "\x00" + field)
}

// seal encrypts plaintext with the primary key for (tenant, field).
func (k *Keyring) seal(tenant, field string, plaintext []byte) (*sealed, error) {
	if k == nil || len(k.keys) == 0 {
		return nil, errors.New("store: no encryption key configured")
	}
	rk := k.keys[0]
	buf := make([]byte, nonceSize, nonceSize+len(plaintext)+rk.aead.Overhead())
	if _, err := rand.Read(buf); err != nil {
		return nil, fmt.Errorf("store: reading random nonce: %w", err)
	}
	buf = rk.aead.Seal(buf, buf[:nonceSize], plaintext, associatedData(tenant, field))
	return &sealed{KID: rk.id, CT: base64.StdEncoding.EncodeToString(buf)}, nil
}

// open decrypts s for (tenant, field). It returns an error wrapping
// ErrDecrypt when no key with s.KID opens it.
func (k *Keyring) open(tenant, field string, s *sealed) ([]byte, error) {
	if k == nil || len(k.keys) == 0 {
		return nil, fmt.Errorf("%w: no encryption key configured", ErrDecrypt)
	}
	buf, err := base64.StdEncoding.DecodeString(s.CT)
	if err != nil || len(buf) < nonceSize {
		return nil, fmt.Errorf("%w: %s of tenant %q is malformed", ErrDecrypt, field, tenant)
	}
	found := false
	for _, rk := range k.keys {
		if rk.id != s.KID {
			continue
		}
		found = true
		pt, err := rk.aead.Open(nil, buf[:nonceSize], buf[nonceSize:], associatedData(tenant, field))
		if err == nil {
			return pt, nil
		}
	}
	if !found {
		return nil, fmt.Errorf("%w: %s of tenant %q is sealed with key %q, configured keys are %s",
			ErrDecrypt, field, tenant, s.KID, strings.Join(k.IDs(), ","))
	}
	return nil, fmt.Errorf("%w: %s of tenant %q failed authentication with key %q",
		ErrDecrypt, field, tenant, s.KID)
}
