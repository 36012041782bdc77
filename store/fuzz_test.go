package store

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzDecodeTenant feeds the record decoder arbitrary stored bytes: it
// returns an error or a tenant whose id is the key it was stored under,
// never panics, and never yields a token that its key did not seal.
func FuzzDecodeTenant(f *testing.F) {
	keys, err := NewKeyring([]byte(strings.Repeat("k", KeySize)), []byte(strings.Repeat("o", KeySize)))
	if err != nil {
		f.Fatal(err)
	}
	good, _, err := encodeTenant(keys, fullTenant("acme"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add("acme", good)
	f.Add("beta", good) // moved to another tenant's key
	f.Add("acme", []byte(`{"id":"acme"}`))
	f.Add("acme", []byte(`{"id":"acme","access_token":{"kid":"x","ct":""}}`))
	f.Add("acme", []byte(`{"id":"acme","refresh_token":{"kid":"`+keys.PrimaryID()+`","ct":"AAAAAAAAAAAAAAAA"}}`))
	f.Add("acme", []byte(`{"id":"acme","access_token":null,"extra":{"a":"b"},"version":7}`))
	f.Add("acme", []byte(`null`))
	f.Add("acme", []byte(`{"id":"acme","access_token":"plain"}`))
	f.Add("", []byte(`{}`))
	f.Add("acme", []byte{0xff, 0xfe})
	f.Fuzz(func(t *testing.T, id string, b []byte) {
		tn, err := decodeTenant(keys, id, b)
		if err != nil {
			if tn != nil {
				t.Fatal("tenant returned with an error")
			}
			if errors.Is(err, ErrDecrypt) && strings.Contains(err.Error(), "AT-plaintext") {
				t.Fatalf("error holds a token: %v", err)
			}
			return
		}
		if tn.ID != id {
			t.Fatalf("record for %q decoded as tenant %q", id, tn.ID)
		}
		if tn.AccessToken != "" || tn.RefreshToken != "" {
			// A token came out: it must have been sealed for this tenant
			// and field by one of the keys, i.e. re-encoding round-trips.
			var rec struct {
				Access  *sealed `json:"access_token"`
				Refresh *sealed `json:"refresh_token"`
			}
			if json.Unmarshal(b, &rec) != nil {
				t.Fatal("tokens from an unparsable record")
			}
			if tn.AccessToken != "" && rec.Access == nil || tn.RefreshToken != "" && rec.Refresh == nil {
				t.Fatal("a token without a sealed field")
			}
		}
		if _, err := sealedWithPrimary(keys, b); err != nil {
			t.Fatalf("decodable record but sealedWithPrimary fails: %v", err)
		}
	})
}
