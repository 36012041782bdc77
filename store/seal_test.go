package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestNewKeyring(t *testing.T) {
	k := testKeys(t, 2)
	kr, err := NewKeyring(k[0], k[1])
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(k[0])
	if want := hex.EncodeToString(sum[:])[:8]; kr.PrimaryID() != want {
		t.Fatalf("PrimaryID = %q, want %q", kr.PrimaryID(), want)
	}
	if ids := kr.IDs(); len(ids) != 2 || ids[0] != kr.PrimaryID() || ids[1] == ids[0] {
		t.Fatalf("IDs = %v", ids)
	}
	// A key listed again is ignored.
	if dup := mustKeyring(t, k[1], k[0], bytes.Clone(k[1])); strings.Join(dup.IDs(), ",") != strings.Join([]string{kr.IDs()[1], kr.IDs()[0]}, ",") {
		t.Fatalf("IDs with a duplicate = %v", dup.IDs())
	}
	// The keyring does not alias the caller's slice.
	k[0][0] ^= 0xff
	s, err := kr.seal("t", fieldAccess, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.open("t", fieldAccess, s); err != nil {
		t.Fatalf("changing the caller's key changed the keyring: %v", err)
	}

	for _, tc := range []struct {
		name string
		keys [][]byte
		want string
	}{
		{"none", nil, "at least one encryption key is required"},
		{"short", [][]byte{make([]byte, 16)}, "store: encryption key must be 32 bytes, got 16"},
		{"long", [][]byte{make([]byte, 33)}, "store: encryption key must be 32 bytes, got 33"},
		{"empty", [][]byte{{}}, "store: encryption key must be 32 bytes, got 0"},
		{"second bad", [][]byte{k[1], make([]byte, 31)}, "got 31"},
	} {
		if _, err := NewKeyring(tc.keys...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestParseKeys(t *testing.T) {
	raw := testKeys(t, 1)[0]
	raw[0], raw[1] = 0xfb, 0xff // make the std and URL alphabets differ
	kr0 := mustKeyring(t, raw)
	for name, enc := range map[string]*base64.Encoding{
		"std": base64.StdEncoding, "raw std": base64.RawStdEncoding,
		"url": base64.URLEncoding, "raw url": base64.RawURLEncoding,
	} {
		s := enc.EncodeToString(raw)
		kr, err := ParseKeys("  " + s + "\n")
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if kr.PrimaryID() != kr0.PrimaryID() {
			t.Errorf("%s: decoded another key", name)
		}
	}

	secret := base64.StdEncoding.EncodeToString(raw)
	short := base64.StdEncoding.EncodeToString(raw[:24])
	for _, tc := range []struct {
		name string
		in   []string
		want string
	}{
		{"none", nil, "at least one"},
		{"empty", []string{""}, "encryption key 1 of 1 is empty"},
		{"blank", []string{"   "}, "encryption key 1 of 1 is empty"},
		{"not base64", []string{secret, secret[:20] + "!!" + secret[22:]}, "encryption key 2 of 2 is not valid base64"},
		{"mixed alphabets", []string{"+" + strings.Repeat("A", 41) + "_"}, "not valid base64"},
		{"short", []string{short}, "encryption key 1 of 1 must be 32 bytes, got 24"},
	} {
		_, err := ParseKeys(tc.in...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
			continue
		}
		for _, in := range tc.in {
			if len(in) > 8 && strings.Contains(err.Error(), strings.TrimRight(in, "=")[4:12]) {
				t.Errorf("%s: error %q echoes the key", tc.name, err)
			}
		}
	}
}

func TestSealOpen(t *testing.T) {
	k := testKeys(t, 2)
	a, b := mustKeyring(t, k[0]), mustKeyring(t, k[1])
	ba := mustKeyring(t, k[1], k[0])
	pt := []byte("the-token")

	s1, err := a.seal("t1", fieldAccess, pt)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := a.seal("t1", fieldAccess, pt)
	if err != nil {
		t.Fatal(err)
	}
	if s1.CT == s2.CT {
		t.Fatal("two seals of the same token are equal (nonce reuse)")
	}
	if s1.KID != a.PrimaryID() {
		t.Fatalf("kid %q, want %q", s1.KID, a.PrimaryID())
	}
	if ct, _ := base64.StdEncoding.DecodeString(s1.CT); len(ct) != nonceSize+len(pt)+16 {
		t.Fatalf("sealed length %d, want nonce+plaintext+tag", len(ct))
	}
	if got, err := ba.open("t1", fieldAccess, s1); err != nil || string(got) != string(pt) {
		t.Fatalf("open with [B, A] = %q, %v", got, err)
	}

	flip := func(s *sealed, i int) *sealed {
		ct, _ := base64.StdEncoding.DecodeString(s.CT)
		ct[i] ^= 1
		return &sealed{KID: s.KID, CT: base64.StdEncoding.EncodeToString(ct)}
	}
	for _, tc := range []struct {
		name   string
		kr     *Keyring
		tenant string
		field  string
		s      *sealed
	}{
		{"other key", b, "t1", fieldAccess, s1},
		{"other tenant", a, "t2", fieldAccess, s1},
		{"other field", a, "t1", fieldRefresh, s1},
		{"tenant id boundary", a, "t", "1\x00" + fieldAccess, s1},
		{"flipped nonce", a, "t1", fieldAccess, flip(s1, 0)},
		{"flipped ciphertext", a, "t1", fieldAccess, flip(s1, nonceSize)},
		{"flipped tag", a, "t1", fieldAccess, flip(s1, nonceSize+len(pt)+3)},
		{"kid swapped", a, "t1", fieldAccess, &sealed{KID: b.PrimaryID(), CT: s1.CT}},
		{"not base64", a, "t1", fieldAccess, &sealed{KID: s1.KID, CT: "%%%"}},
		{"too short", a, "t1", fieldAccess, &sealed{KID: s1.KID, CT: "AAAA"}},
		{"nil keyring", nil, "t1", fieldAccess, s1},
	} {
		_, err := tc.kr.open(tc.tenant, tc.field, tc.s)
		if !errors.Is(err, ErrDecrypt) {
			t.Errorf("%s: %v, want ErrDecrypt", tc.name, err)
		} else if strings.Contains(err.Error(), string(pt)) {
			t.Errorf("%s: error leaks the plaintext", tc.name)
		}
	}
	var nilRing *Keyring
	if _, err := nilRing.seal("t", fieldAccess, pt); err == nil {
		t.Error("seal with nil keyring: no error")
	}
	if nilRing.PrimaryID() != "" || nilRing.IDs() != nil {
		t.Error("nil keyring has ids")
	}
}

func TestCodec(t *testing.T) {
	kr := mustKeyring(t, testKeys(t, 1)...)
	tn := fullTenant("shop")
	blob, wid, err := encodeTenant(kr, tn)
	if err != nil {
		t.Fatal(err)
	}
	if wid == "" || storedWriteID(blob) != wid {
		t.Fatalf("write id %q not in the blob (%q)", wid, storedWriteID(blob))
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(blob, &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"access_token", "refresh_token"} {
		var s sealed
		if err := json.Unmarshal(m[f], &s); err != nil || s.KID != kr.PrimaryID() || s.CT == "" {
			t.Errorf("%s stored as %s", f, m[f])
		}
	}
	if _, ok := m["Version"]; ok {
		t.Error("version inside the blob")
	}
	got, err := decodeTenant(kr, "shop", blob)
	if err != nil {
		t.Fatal(err)
	}
	want := tn.Clone()
	want.Version = 0
	if got.AccessToken != want.AccessToken || got.RefreshToken != want.RefreshToken || got.Scope != want.Scope {
		t.Fatalf("decoded %+v", got)
	}
	// Two encodings of the same tenant differ (write id, nonces).
	blob2, wid2, _ := encodeTenant(kr, tn)
	if wid2 == wid {
		t.Fatal("two encodings share a write id")
	}
	if bytes.Equal(blob, blob2) {
		t.Fatal("two encodings are identical")
	}

	// Empty tokens are not sealed.
	bare, _, err := encodeTenant(kr, &Tenant{ID: "bare"})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(bare, []byte("access_token")) || bytes.Contains(bare, []byte("refresh_token")) {
		t.Fatalf("empty tokens stored: %s", bare)
	}

	// A blob moved to another tenant's key is refused.
	if _, err := decodeTenant(kr, "other", blob); err == nil {
		t.Fatal("blob of shop decoded as other")
	}
	// Sealed tokens swapped into another tenant's record do not open.
	otherBlob, _, _ := encodeTenant(kr, fullTenant("other"))
	var om map[string]json.RawMessage
	_ = json.Unmarshal(otherBlob, &om)
	om["access_token"] = m["access_token"]
	swapped, _ := json.Marshal(om)
	if _, err := decodeTenant(kr, "other", swapped); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("swapped token: %v, want ErrDecrypt", err)
	}
	// Access and refresh swapped within one record do not open.
	m["access_token"], m["refresh_token"] = m["refresh_token"], m["access_token"]
	swapped, _ = json.Marshal(m)
	if _, err := decodeTenant(kr, "shop", swapped); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("swapped fields: %v, want ErrDecrypt", err)
	}

	if _, err := decodeTenant(kr, "shop", []byte("{")); err == nil || errors.Is(err, ErrDecrypt) {
		t.Fatalf("corrupt JSON: %v", err)
	}
	if _, _, err := encodeTenant(kr, nil); err == nil {
		t.Fatal("nil tenant: no error")
	}
	if _, _, err := encodeTenant(nil, tn); err == nil {
		t.Fatal("nil keyring: no error")
	}
}

func TestTenantClone(t *testing.T) {
	tn := fullTenant("c")
	c := tn.Clone()
	c.Extra["k"] = "changed"
	if tn.Extra["k"] != "v" {
		t.Fatal("Clone shares Extra")
	}
	if (&Tenant{}).Clone().Extra != nil {
		t.Fatal("Clone invents Extra")
	}
}
