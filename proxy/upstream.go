package proxy

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/lsproxy/lsproxy/auth"
)

// DomainPrefixPlaceholder in an upstream URL is replaced, per request, by
// the tenant's stored domain_prefix (x-series: every store has its own host).
const DomainPrefixPlaceholder = "{domain_prefix}"

// ErrNoUpstreamHost: the upstream is a template and the tenant has no valid
// domain_prefix to fill it. Answered 502 upstream_unavailable: the request
// goes nowhere rather than to another store's host.
var ErrNoUpstreamHost = errors.New("proxy: tenant has no valid domain_prefix for the upstream URL")

// placeholderLabel stands in for the placeholder while a template is
// validated; .invalid (RFC 2606) never resolves.
const placeholderLabel = "domain-prefix"

// Upstream is where proxied requests go: one fixed URL, or a template
// whose {domain_prefix} (in the host or the path) is filled from each
// tenant's own record. It is immutable and safe for concurrent use.
type Upstream struct {
	raw   string
	fixed *url.URL // nil for a template
	// parked is the template with the placeholder host under .invalid:
	// what a request carries between rewrite and the token lookup.
	parked *url.URL
}

// ParseUpstream checks raw: an absolute http(s) URL without user info,
// query or fragment, where {domain_prefix} may appear only in the host or
// the path.
func ParseUpstream(raw string) (*Upstream, error) {
	probe := strings.ReplaceAll(raw, DomainPrefixPlaceholder, placeholderLabel)
	u, err := url.Parse(probe)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("proxy: upstream %q must be an absolute http(s) URL", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.Contains(probe, "#") {
		return nil, fmt.Errorf("proxy: upstream %q must not contain user info, a query or a fragment", raw)
	}
	if strings.Contains(probe, "{") || strings.Contains(probe, "}") {
		return nil, fmt.Errorf("proxy: upstream %q: the only placeholder is %s", raw, DomainPrefixPlaceholder)
	}
	up := &Upstream{raw: raw}
	if !strings.Contains(raw, DomainPrefixPlaceholder) {
		up.fixed = u
		return up, nil
	}
	if strings.Contains(u.Scheme+u.Port(), placeholderLabel) {
		return nil, fmt.Errorf("proxy: upstream %q: %s may appear only in the host or the path", raw, DomainPrefixPlaceholder)
	}
	parked, err := up.fill(placeholderLabel)
	if err != nil {
		return nil, err
	}
	parked.Host = placeholderLabel + ".invalid"
	up.parked = parked
	return up, nil
}

// Templated reports whether the URL depends on the tenant.
func (u *Upstream) Templated() bool { return u.fixed == nil }

// String returns the URL as configured.
func (u *Upstream) String() string { return u.raw }

// Resolve returns the upstream for a tenant whose domain_prefix is dp
// (ignored for a fixed URL). It returns ErrNoUpstreamHost when the URL is a
// template and dp is not one DNS label.
func (u *Upstream) Resolve(dp string) (*url.URL, error) {
	if u.fixed != nil {
		return u.fixed, nil
	}
	if !auth.ValidDomainPrefix(dp) {
		return nil, ErrNoUpstreamHost
	}
	return u.fill(dp)
}

func (u *Upstream) fill(dp string) (*url.URL, error) {
	out, err := url.Parse(strings.ReplaceAll(u.raw, DomainPrefixPlaceholder, dp))
	if err != nil || out.Host == "" {
		return nil, ErrNoUpstreamHost
	}
	return out, nil
}
