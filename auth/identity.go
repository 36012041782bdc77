package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/store"
)

// Identity says how to learn the merchant account a grant belongs to. It is
// data in each Preset; the zero value means the provider documents no way
// and the grant is not identified.
type Identity struct {
	// Path is fetched with GET and the new access token on the tenant's
	// API host (the configured upstream); "" = no request.
	Path string
	// Accounts is the dotted path in the JSON answer to the account object
	// or to a list of them (K-Series: one per business the token reaches);
	// "" = the answer itself.
	Accounts string
	// ID and Name are an account object's fields.
	ID, Name string
	// Locations is an account object's list of locations; LocationID and
	// LocationName are a location's fields. "" = no locations.
	Locations, LocationID, LocationName string
	// FromExtra names the stored callback parameter that identifies the
	// account without a request (x-series: domain_prefix).
	FromExtra string
	// Source cites where this was checked.
	Source string
}

// Known reports whether the preset can identify a grant.
func (i Identity) Known() bool { return i.Path != "" || i.FromExtra != "" }

// Identified is who a grant belongs to.
type Identified struct {
	Account   store.Account
	Locations []store.Location // sorted by id
}

// ErrIdentify: the provider's identity answer was unusable or unreachable.
var ErrIdentify = errors.New("auth: cannot identify the merchant account")

// ErrIdentifyForbidden: the identity endpoint answered 401 or 403 (the
// app's scopes probably do not cover it). Errors wrapping it wrap
// ErrIdentify too.
var ErrIdentifyForbidden = errors.New("auth: the identity endpoint refused the token")

// maxIdentityBody bounds the identity answer (K-Series: up to 500
// locations per business).
const maxIdentityBody = 4 << 20

// Identifier asks the provider who a grant belongs to. Safe for concurrent
// use once configured.
type Identifier struct {
	Identity Identity
	// API returns the tenant's API base URL for its domain_prefix (the
	// proxy's upstream): the access token goes nowhere else.
	API func(domainPrefix string) (*url.URL, error)
	// HTTPClient sends the request; nil = a client with Timeout. Redirects
	// are never followed (they would carry the token elsewhere).
	HTTPClient *http.Client
	// Timeout bounds one request; 0 = 10s.
	Timeout time.Duration
}

// Identify returns the account behind accessToken; extra are the tenant's
// stored callback parameters. It returns (nil, nil) when the preset has no
// identity lookup, and an error wrapping ErrIdentify otherwise. Errors never
// contain the token or the answer's body.
func (c *Identifier) Identify(ctx context.Context, accessToken string, extra map[string]string) (*Identified, error) {
	id := c.Identity
	if !id.Known() {
		return nil, nil
	}
	if id.Path == "" {
		v := extra[id.FromExtra]
		if v == "" {
			return nil, fmt.Errorf("%w: no %s on the callback", ErrIdentify, id.FromExtra)
		}
		return &Identified{Account: store.Account{ID: v, Name: v}}, nil
	}
	body, err := c.fetch(ctx, accessToken, extra["domain_prefix"])
	if err != nil {
		return nil, err
	}
	return parseIdentity(id, body)
}

func (c *Identifier) fetch(ctx context.Context, accessToken, domainPrefix string) ([]byte, error) {
	if c.API == nil {
		return nil, fmt.Errorf("%w: no API URL configured", ErrIdentify)
	}
	base, err := c.API(domainPrefix)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIdentify, err)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := *base
	u.Path = strings.TrimSuffix(u.Path, "/") + c.Identity.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: bad API URL", ErrIdentify)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	client := c.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: timeout}
	}
	noRedirect := *client
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noRedirect.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s unreachable: %s", ErrIdentify, c.Identity.Path, httperr.NetReason(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			return nil, fmt.Errorf("%w: %w: %s answered %d", ErrIdentify, ErrIdentifyForbidden, c.Identity.Path, resp.StatusCode)
		}
		return nil, fmt.Errorf("%w: %s answered %d", ErrIdentify, c.Identity.Path, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxIdentityBody+1))
	if err != nil || len(b) > maxIdentityBody {
		return nil, fmt.Errorf("%w: %s answer unreadable or too large", ErrIdentify, c.Identity.Path)
	}
	return b, nil
}

// parseIdentity reads the accounts (and their locations) from an answer.
func parseIdentity(id Identity, body []byte) (*Identified, error) {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	var root any
	if err := dec.Decode(&root); err != nil {
		return nil, fmt.Errorf("%w: %s answer is not JSON", ErrIdentify, id.Path)
	}
	node := root
	if id.Accounts != "" {
		for _, k := range strings.Split(id.Accounts, ".") {
			m, _ := node.(map[string]any)
			node = m[k]
		}
	}
	var objs []map[string]any
	switch n := node.(type) {
	case map[string]any:
		objs = []map[string]any{n}
	case []any:
		for _, e := range n {
			if m, ok := e.(map[string]any); ok {
				objs = append(objs, m)
			}
		}
	}
	var ids, names []string
	out := &Identified{}
	for _, o := range objs {
		aid := scalar(o[id.ID])
		if aid == "" {
			continue
		}
		ids = append(ids, aid)
		names = append(names, scalar(o[id.Name]))
		if id.Locations == "" {
			continue
		}
		locs, _ := o[id.Locations].([]any)
		for _, l := range locs {
			lm, _ := l.(map[string]any)
			if lid := scalar(lm[id.LocationID]); lid != "" {
				out.Locations = append(out.Locations, store.Location{ID: lid, Name: scalar(lm[id.LocationName]), BusinessID: aid})
			}
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: %s answer names no account", ErrIdentify, id.Path)
	}
	// Several accounts (a K-Series user in several businesses): the
	// identity is the set, in a stable order.
	order := make([]int, len(ids))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return ids[order[a]] < ids[order[b]] })
	sortedIDs, sortedNames := make([]string, len(ids)), make([]string, len(ids))
	for i, j := range order {
		sortedIDs[i], sortedNames[i] = ids[j], names[j]
	}
	out.Account = store.Account{ID: strings.Join(sortedIDs, ","), Name: strings.Join(sortedNames, ", ")}
	sort.Slice(out.Locations, func(a, b int) bool { return out.Locations[a].ID < out.Locations[b].ID })
	return out, nil
}

// scalar renders a JSON string or number as a string; anything else is "".
func scalar(v any) string {
	switch s := v.(type) {
	case string:
		return s
	case json.Number:
		return s.String()
	}
	return ""
}
