package onboard

import (
	"strings"
	"testing"

	"github.com/lsproxy/lsproxy/store"
)

// The 409 page names the account to use only by the last characters of its
// id (never its name, never the whole id) and the signed-in account by name.
func TestPageOtherAccountNamesTheAccountByItsLastDigits(t *testing.T) {
	for _, c := range []struct {
		expected        store.Account
		want, leak      string
		signedIn, named string
	}{
		{store.Account{ID: "7340001", Name: "Demo Bistro Group"}, "ends in \u20260001", "7340001", "Other Venue", "\u201cOther Venue\u201d"},
		{store.Account{ID: "7,99123", Name: "Two Businesses"}, "ends in \u20269123", "Two Businesses", "", "another account"},
		{store.Account{ID: "1234", Name: "Short"}, "the account this link was made for", "1234", "X", "\u201cX\u201d"},
	} {
		p := pageOtherAccount(c.expected, store.Account{ID: "9160002", Name: c.signedIn})
		text := p.Heading + " " + p.Message + " " + p.Action
		if !strings.Contains(text, c.want) || !strings.Contains(text, c.named) {
			t.Errorf("%+v: page %q lacks %q or %q", c.expected, text, c.want, c.named)
		}
		for _, leak := range []string{c.leak, c.expected.Name, "9160002", "rebind", "tenant"} {
			if strings.Contains(text, leak) {
				t.Errorf("%+v: page names %q: %q", c.expected, leak, text)
			}
		}
	}
}
