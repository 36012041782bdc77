package emulator

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// Account is a merchant account: a K-Series business, an R-Series account,
// an X-Series retailer (store) or an O-Series company.
type Account struct {
	// ID is the account's id: K-Series businessId, R-Series accountID,
	// O-Series company id (numeric ids are answered as JSON numbers, as the
	// real APIs do).
	ID   string
	Name string
	// DomainPrefix is the X-Series store's host label, sent on the callback
	// and in token responses; "" = ID.
	DomainPrefix string
	// Locations are the K-Series business locations.
	Locations []Location
}

// Location is a K-Series business location.
type Location struct {
	ID   string // blID
	Name string // blName
}

// user is a login that signs in to an account, seeing some of its locations.
type user struct {
	account   string
	locations map[string]bool // nil: all of the account's locations
}

// AddAccount registers (or replaces) an account.
func (e *Emulator) AddAccount(a Account) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.accounts == nil {
		e.accounts = map[string]Account{}
	}
	a.Locations = append([]Location(nil), a.Locations...)
	e.accounts[a.ID] = a
}

// AddUser registers login (what Approve and login_hint name) as a user of
// account; locationIDs limits the K-Series locations the user, and so every
// grant the user authorizes, can reach (none = all of the account's).
// A login never registered signs in to an account of its own: id, name
// and domain_prefix equal to the login, no locations.
func (e *Emulator) AddUser(login, account string, locationIDs ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.users == nil {
		e.users = map[string]user{}
	}
	u := user{account: account}
	if len(locationIDs) > 0 {
		u.locations = map[string]bool{}
		for _, id := range locationIDs {
			u.locations[id] = true
		}
	}
	e.users[login] = u
}

// accountOfLocked returns the account login signs in to and the locations
// that login sees.
func (e *Emulator) accountOfLocked(login string) (Account, []Location) {
	u, ok := e.users[login]
	if !ok {
		return Account{ID: login, Name: login, DomainPrefix: login}, nil
	}
	a, ok := e.accounts[u.account]
	if !ok {
		a = Account{ID: u.account, Name: u.account}
	}
	if a.DomainPrefix == "" {
		a.DomainPrefix = a.ID
	}
	var locs []Location
	for _, l := range a.Locations {
		if u.locations == nil || u.locations[l.ID] {
			locs = append(locs, l)
		}
	}
	return a, locs
}

// domainPrefixLocked is the X-Series store host label of login's account.
func (e *Emulator) domainPrefixLocked(login string) string {
	a, _ := e.accountOfLocked(login)
	return a.DomainPrefix
}

// Identity endpoints, at the real services' paths:
//
//	k-series, k-series-v1  GET /f/data/businesses     (Financial API "Get Businesses")
//	r-series               GET /API/V3/Account.json   (the account of the token)
//	o-series               GET /v1/companies/me.json  (the company of the token)
func identityPath(m Mode) string {
	switch m {
	case ModeKSeries, ModeKSeriesV1:
		return "/f/data/businesses"
	case ModeRSeries:
		return "/API/V3/Account.json"
	case ModeOSeries:
		return "/v1/companies/me.json"
	}
	return ""
}

// idValue answers a numeric id as a JSON number, any other as a string.
func idValue(id string) any {
	if _, err := strconv.ParseInt(id, 10, 64); err == nil {
		return json.Number(id)
	}
	return id
}

// serveIdentity answers the mode's identity endpoint for the grant of login.
// Like every API answer it also names the login ("tenant"), which the real
// services do not.
func (e *Emulator) serveIdentity(w http.ResponseWriter, login string) {
	e.mu.Lock()
	a, locs := e.accountOfLocked(login)
	e.mu.Unlock()
	switch e.cfg.Mode {
	case ModeKSeries, ModeKSeriesV1:
		bls := make([]map[string]any, 0, len(locs))
		for _, l := range locs {
			bls = append(bls, map[string]any{"blName": l.Name, "blID": idValue(l.ID), "country": "GB", "timezone": "Europe/London"})
		}
		biz := []map[string]any{{"businessName": a.Name, "businessId": idValue(a.ID), "currencyCode": "GBP", "businessLocations": bls}}
		writeJSON(w, http.StatusOK, map[string]any{
			"tenant":    login,
			"_embedded": map[string]any{"businessList": biz},
			"_links":    map[string]any{"self": map[string]string{"href": "/f/data/businesses"}},
		})
	case ModeRSeries:
		writeJSON(w, http.StatusOK, map[string]any{
			"tenant":      login,
			"@attributes": map[string]string{"count": "1"},
			"Account":     map[string]any{"accountID": a.ID, "name": a.Name},
		})
	case ModeOSeries:
		writeJSON(w, http.StatusOK, map[string]any{"tenant": login, "id": idValue(a.ID), "name": a.Name})
	}
}

// storeHostOK reports, for x-series with StoreHosts, whether the request's
// host names the store of login: its first label is the store's
// domain_prefix (case-insensitive). Without StoreHosts every host passes.
func (e *Emulator) storeHostOK(r *http.Request, login string) bool {
	if e.cfg.Mode != ModeXSeries || !e.cfg.StoreHosts {
		return true
	}
	host := r.Host
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	e.mu.Lock()
	dp := e.domainPrefixLocked(login)
	e.mu.Unlock()
	label, _, _ := strings.Cut(host, ".")
	return strings.EqualFold(label, dp)
}

// Accounts lists the registered account ids, sorted.
func (e *Emulator) Accounts() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids := make([]string, 0, len(e.accounts))
	for id := range e.accounts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// locationOf finds the K-Series business location a request addresses: the
// businessLocationId query parameter (as the real API takes it). ok is
// false when the request names none.
func (e *Emulator) locationOf(r *http.Request) (string, bool) {
	if e.cfg.Mode != ModeKSeries && e.cfg.Mode != ModeKSeriesV1 {
		return "", false
	}
	id := r.URL.Query().Get("businessLocationId")
	return id, id != ""
}

// coversLocation reports whether login's grant reaches location id: a
// registered user sees its account's locations (or its subset); an
// unregistered login reaches none.
func (e *Emulator) coversLocation(login, id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, locs := e.accountOfLocked(login)
	for _, l := range locs {
		if l.ID == id {
			return true
		}
	}
	return false
}
