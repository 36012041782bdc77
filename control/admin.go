package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/auth"
	"github.com/lsproxy/lsproxy/internal/defect"
	"github.com/lsproxy/lsproxy/internal/httperr"
	"github.com/lsproxy/lsproxy/onboard"
	"github.com/lsproxy/lsproxy/ratelimit"
	"github.com/lsproxy/lsproxy/store"
)

// maxAdminBody bounds admin request bodies.
const maxAdminBody = 64 << 10

// TenantView is a tenant as the admin API shows it: never a token value.
type TenantView struct {
	ID                    string            `json:"id"`
	Provider              string            `json:"provider,omitempty"`
	Status                store.Status      `json:"status"`
	Reason                string            `json:"reason,omitempty"`
	FlaggedAt             *time.Time        `json:"flagged_at,omitempty"`
	AccessTokenExpiresAt  *time.Time        `json:"access_token_expires_at,omitempty"`
	RefreshTokenExpiresAt *time.Time        `json:"refresh_token_expires_at,omitempty"`
	Scope                 string            `json:"scope,omitempty"`
	LastRefreshAt         *time.Time        `json:"last_refresh_at,omitempty"`
	RefreshCount          int64             `json:"refresh_count"`
	FailureCount          int64             `json:"failure_count"`
	RefreshInFlight       bool              `json:"refresh_in_flight,omitempty"`
	HasRefreshToken       bool              `json:"has_refresh_token"`
	CreatedAt             *time.Time        `json:"created_at,omitempty"`
	UpdatedAt             *time.Time        `json:"updated_at,omitempty"`
	Version               int64             `json:"version"`
	Extra                 map[string]string `json:"extra,omitempty"`
	// RateLimit is the tenant's last known upstream budget (GET only;
	// absent when the upstream never reported one).
	RateLimit *ratelimit.Budget `json:"rate_limit,omitempty"`
	// Account is the merchant account behind the grant (SPEC §8);
	// Locations the K-Series business locations it reaches.
	// Account is null while it is not known (imported, identification
	// off, or Identify pending).
	Account   *store.Account   `json:"account"`
	Locations []store.Location `json:"locations,omitempty"`
	// Identify is a background identification in progress (SPEC §8,
	// amended): {"state": "pending", "last_error", "next_at"}.
	Identify *IdentifyView `json:"identify,omitempty"`
	// Candidate is a re-authorization's grant awaiting verification (not
	// served); POST .../accept-candidate promotes it by hand.
	Candidate   *CandidateView `json:"candidate,omitempty"`
	LocationsAt *time.Time     `json:"locations_at,omitempty"`
	History     []store.Event  `json:"history,omitempty"`
}

func ts(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// IdentifyView is TenantView.Identify.
type IdentifyView struct {
	State     string     `json:"state"`
	LastError string     `json:"last_error,omitempty"`
	NextAt    *time.Time `json:"next_at,omitempty"`
	Since     *time.Time `json:"since,omitempty"`
	Attempts  int        `json:"attempts"`
}

// CandidateView is TenantView.Candidate: never a token.
type CandidateView struct {
	ReceivedAt           *time.Time `json:"received_at,omitempty"`
	AccessTokenExpiresAt *time.Time `json:"access_token_expires_at,omitempty"`
	Scope                string     `json:"scope,omitempty"`
}

// View renders a tenant for the admin API.
func View(t *store.Tenant) TenantView {
	v := view(t)
	if i := t.Identify; i != nil {
		v.Identify = &IdentifyView{State: i.State, LastError: i.LastError, NextAt: ts(i.NextAt), Since: ts(i.Since), Attempts: i.Attempts}
	}
	if c := t.Candidate; c != nil {
		v.Candidate = &CandidateView{ReceivedAt: ts(c.ReceivedAt), AccessTokenExpiresAt: ts(c.AccessExpiresAt), Scope: c.Scope}
	}
	return v
}

func view(t *store.Tenant) TenantView {
	return TenantView{
		ID: t.ID, Provider: t.Provider, Status: t.Status, Reason: t.Reason, FlaggedAt: ts(t.FlaggedAt),
		AccessTokenExpiresAt: ts(t.AccessExpiresAt), RefreshTokenExpiresAt: ts(t.RefreshExpiresAt),
		Scope: t.Scope, LastRefreshAt: ts(t.LastRefreshAt), RefreshCount: t.RefreshCount,
		FailureCount: t.FailureCount, RefreshInFlight: t.RefreshInFlight, HasRefreshToken: t.RefreshToken != "",
		CreatedAt: ts(t.CreatedAt), UpdatedAt: ts(t.UpdatedAt), Version: t.Version, Extra: t.Extra,
		Account: t.Account, Locations: t.Locations, LocationsAt: ts(t.LocationsAt),
		History: t.History,
	}
}

// pathTenant validates the {id} path value; it answers 400 and returns ""
// when invalid.
func pathTenant(w http.ResponseWriter, r *http.Request) string {
	id := r.PathValue("id")
	if !store.ValidTenantID(id) {
		httperr.Write(w, httperr.Error{Kind: httperr.InvalidTenant})
		return ""
	}
	return id
}

// adminActions names the audited action of each admin route pattern.
var adminActions = map[string]string{
	"GET /admin/tenants":                 "list",
	"GET /admin/tenants/{id}":            "get",
	"PUT /admin/tenants/{id}":            "import",
	"POST /admin/import":                 "bulk_import",
	"POST /admin/tenants/{id}/locations": "locations",
	"DELETE /admin/tenants/{id}":         "delete",
	"POST /admin/tenants/{id}/refresh":   "refresh",
	"POST /admin/tenants/{id}/retry":     "retry",
	"POST /admin/tenants/{id}/authorize": "authorize",

	"POST /admin/tenants/{id}/accept-candidate": "accept_candidate",
	"POST /admin/tenants/{id}/revoke-links":     "revoke_links",
}

// audited writes one "admin" log line for every request to /admin/, after
// it is answered: who (the admin token, or unauthenticated), the action,
// the tenant, the status and the remote address. Never a header or a body.
func (s *Server) audited(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &httperr.StatusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		status := sw.StatusOr200()
		who, action, level := "admin-token", adminActions[r.Pattern], zap.InfoLevel
		switch {
		case status == http.StatusUnauthorized && sw.Header().Get("WWW-Authenticate") != "":
			who, action, level = "unauthenticated", "denied", zap.WarnLevel
		case s.AdminToken == "":
			who, action = "none", "disabled"
		case action == "":
			action = "unknown"
		}
		tenant := r.PathValue("id")
		if !store.ValidTenantID(tenant) {
			tenant = "" // never log what is not a tenant id
		}
		if ce := s.Logger.Check(level, "admin"); ce != nil {
			ce.Write(zap.String("who", who), zap.String("action", action), zap.String("tenant", tenant),
				zap.String("method", r.Method), zap.Int("status", status), zap.String("remote", r.RemoteAddr))
		}
		if who == "admin-token" && r.Method != http.MethodGet && status != http.StatusNotFound { // actions.go
			s.recordAction(r.Context(), tenant, who, action, status, sw.Header().Get("X-Lsproxy-Error"), "")
		}
	})
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	id := pathTenant(w, r)
	if id == "" {
		return
	}
	t, err := s.Store.Get(r.Context(), id)
	if err != nil {
		adminError(w, id, err)
		return
	}
	v := View(t)
	v.RateLimit = s.rateLimit(r.Context(), id)
	httperr.WriteJSON(w, http.StatusOK, v)
}

// importBody is PUT /admin/tenants/{id}.
type importBody struct {
	RefreshToken     string `json:"refresh_token"`
	AccessToken      string `json:"access_token"`
	ExpiresIn        int64  `json:"expires_in"`
	RefreshExpiresIn int64  `json:"refresh_expires_in"`
	Scope            string `json:"scope"`
	DomainPrefix     string `json:"domain_prefix"`
}

// put is PUT /admin/tenants/{id}[?overwrite=true]: one tenant imported
// through the same path as a line of POST /admin/import (importTenant,
// SPEC §3 rule 19): 201 created; 200 replaced, or unchanged when the
// tenant already holds this refresh token (nothing written: a retried
// request); 409 refresh_in_flight while a refresh is in flight, 409
// refresh_token_differs when the tenant holds another refresh token and
// overwrite=true is not given.
func (s *Server) put(w http.ResponseWriter, r *http.Request) {
	id := pathTenant(w, r)
	if id == "" {
		return
	}
	overwrite, err := boolQuery(r, "overwrite")
	if err != nil {
		httperr.Write(w, httperr.Error{Kind: httperr.BadQuery, Tenant: id, Detail: err.Error()})
		return
	}
	var body importBody
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		httperr.Write(w, httperr.Error{Kind: httperr.BadRequest, Tenant: id, Detail: jsonProblem(err)})
		return
	}
	if dec.More() {
		httperr.Write(w, httperr.Error{Kind: httperr.BadRequest, Tenant: id, Detail: "more than one JSON value"})
		return
	}
	line := ImportLine{ID: id, RefreshToken: body.RefreshToken, AccessToken: body.AccessToken, ExpiresIn: body.ExpiresIn,
		RefreshExpiresIn: body.RefreshExpiresIn, Scope: body.Scope, DomainPrefix: body.DomainPrefix}
	if p := line.problems(); len(p) > 0 {
		httperr.Write(w, httperr.Error{Kind: httperr.BadRequest, Tenant: id, Detail: strings.Join(p, "; ")})
		return
	}
	out, refused := s.importTenant(r.Context(), line, false, overwrite, defect.On(defect.AdminPutIgnoresMark))
	if refused != nil {
		httperr.Write(w, httperr.Error{Kind: refused.kind, Tenant: id, Detail: refused.detail, RetryAfter: time.Second})
		return
	}
	status := http.StatusOK
	if out.status == "created" {
		status = http.StatusCreated
	}
	w.Header().Set(ImportHeader, out.status)
	httperr.WriteJSON(w, status, View(out.rec))
}

// ImportHeader names what PUT /admin/tenants/{id} did: created, updated or
// unchanged.
const ImportHeader = "X-Lsproxy-Import"

// boolQuery reads an optional true/false query parameter.
func boolQuery(r *http.Request, name string) (bool, error) {
	switch v := r.URL.Query().Get(name); v {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, fmt.Errorf("%s must be true or false", name)
}

// jsonProblem describes a JSON decoding error without echoing input values.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	case errors.As(err, &mbe):
		return "body too large"
	case errors.Is(err, io.EOF):
		return "empty body"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return "invalid JSON"
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	id := pathTenant(w, r)
	if id == "" {
		return
	}
	if err := s.Store.Delete(r.Context(), id); err != nil {
		adminError(w, id, err)
		return
	}
	s.Tokens.Invalidate(id)
	w.WriteHeader(http.StatusNoContent)
}

// acceptCandidate promotes a re-authorization's grant awaiting
// verification by hand: 200 with the tenant, 409 no_candidate when there
// is none, 409 conflict while a refresh is in flight.
func (s *Server) acceptCandidate(w http.ResponseWriter, r *http.Request) {
	id := pathTenant(w, r)
	if id == "" {
		return
	}
	t, err := onboard.AcceptCandidate(r.Context(), s.Store, id, s.Now())
	if err != nil {
		adminError(w, id, err)
		return
	}
	s.Tokens.Invalidate(id)
	httperr.WriteJSON(w, http.StatusOK, View(t))
}

// revokeLinks makes every authorize link issued so far for the tenant stop
// working (its link generation changes; flows already started are refused
// at the callback): 200 with the tenant.
func (s *Server) revokeLinks(w http.ResponseWriter, r *http.Request) {
	id := pathTenant(w, r)
	if id == "" {
		return
	}
	t, err := store.Update(r.Context(), s.Store, id, func(t *store.Tenant) error {
		t.RevokeLinks(s.Now())
		return nil
	})
	if err != nil {
		adminError(w, id, err)
		return
	}
	httperr.WriteJSON(w, http.StatusOK, View(t))
}

func (s *Server) refresh(w http.ResponseWriter, r *http.Request) {
	s.refreshWith(w, r, s.Tokens.ForceRefresh)
}

// retry sends a flagged tenant's stored refresh token once more (SPEC §3
// rule 15): 200 with the recovered tenant, 409 reauthorization_required
// when the provider still rejects it.
func (s *Server) retry(w http.ResponseWriter, r *http.Request) {
	s.refreshWith(w, r, s.Tokens.Retry)
}

func (s *Server) refreshWith(w http.ResponseWriter, r *http.Request, do func(context.Context, string) (auth.Token, error)) {
	id := pathTenant(w, r)
	if id == "" {
		return
	}
	_, err := do(r.Context(), id)
	if err != nil {
		adminError(w, id, err)
		return
	}
	t, err := s.Store.Get(r.Context(), id)
	if err != nil {
		adminError(w, id, err)
		return
	}
	v := View(t)
	v.RateLimit = s.rateLimit(r.Context(), id)
	httperr.WriteJSON(w, http.StatusOK, v)
}

func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	id := pathTenant(w, r)
	if id == "" {
		return
	}
	if s.Onboarding == nil {
		httperr.Write(w, httperr.Error{Kind: httperr.OnboardingDisabled, Tenant: id})
		return
	}
	// Optional body {"rebind": true}: the link may connect another
	// merchant account than the tenant's (an empty body is a plain link).
	var body struct {
		Rebind bool `json:"rebind"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil && !errors.Is(err, io.EOF) {
		httperr.Write(w, httperr.Error{Kind: httperr.BadRequest, Tenant: id, Detail: "the optional body is {\"rebind\": true|false}: " + jsonProblem(err)})
		return
	}
	link, err := "", error(nil)
	if body.Rebind {
		rb, ok := s.Onboarding.(Rebinder)
		if !ok {
			httperr.Write(w, httperr.Error{Kind: httperr.OnboardingDisabled, Tenant: id, Detail: "rebind links are not supported"})
			return
		}
		link, err = rb.RebindLink(r.Context(), id)
	} else {
		link, err = s.Onboarding.AuthorizeLink(r.Context(), id)
	}
	if err != nil {
		adminError(w, id, err)
		return
	}
	out := map[string]any{"authorize_url": link, "tenant": id}
	if body.Rebind {
		out["rebind"] = true
	}
	httperr.WriteJSON(w, http.StatusOK, out)
}
