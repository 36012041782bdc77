package onboard

import "github.com/lsproxy/lsproxy/store"

// authorizedReason says what an authorization ended, from the record
// before it, for the tenant's history (fixed words, never a value).
func authorizedReason(cur *store.Tenant) string {
	switch {
	case cur.AuthorizedAt.IsZero() && cur.RefreshToken == "":
		return "first authorization"
	case cur.Status != store.StatusActive:
		return "re-authorized after: " + cur.Reason
	}
	return "re-authorized while active"
}
