package httperr

import (
	"math/rand/v2"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// validRequestID is the regexp the docs state, written as a loop.
func TestValidRequestIDMatchesItsRegexp(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)
	cases := []string{"", "a", "A-1", "-a", ".a", "a.b_c:d-e", "a b", "a\n", "ä", strings.Repeat("a", 64), strings.Repeat("a", 65),
		"0f3c9a1b2c3d4e5f", "trace:01/02", "a\x00"}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := "aZ09._:- /\n\"\\é"
	for i := 0; i < 5000; i++ {
		n := rng.IntN(70)
		b := make([]byte, 0, n)
		for j := 0; j < n; j++ {
			b = append(b, alphabet[rng.IntN(len(alphabet))])
		}
		cases = append(cases, string(b))
	}
	for _, c := range cases {
		if got, want := validRequestID(c), re.MatchString(c); got != want {
			t.Fatalf("validRequestID(%q) = %v, regexp says %v", c, got, want)
		}
	}
}

func TestNewRequestIDsAreDistinctHex(t *testing.T) {
	seen := make(map[string]bool)
	r := httptest.NewRequest("GET", "/", nil)
	for i := 0; i < 10000; i++ {
		id := RequestID(r)
		if len(id) != 16 || !validRequestID(id) || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("request id %q: want 16 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("request id %q repeated", id)
		}
		seen[id] = true
	}
}
