package onboard

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/store"
)

func (o *Onboarder) linkMAC(tenant string, iat, exp, gen int64, rebind bool) []byte {
	m := hmac.New(sha256.New, o.LinkKey)
	fmt.Fprintf(m, "%s|%s|%d|%d", linkMACLabel, tenant, iat, exp)
	if gen != 0 {
		// The tenant's link generation (revoke-links, re-creation). A
		// link without one is from an earlier version: it works only while
		// the record has none either.
		fmt.Fprintf(m, "|g%d", gen)
	}
	if rebind {
		// Only a signed link can allow another account; exp is an
		// integer, so this suffix cannot be forged from a plain link.
		m.Write([]byte("|rebind"))
	}
	return m.Sum(nil)
}

// AuthorizeLink returns a link for the merchant of tenant, valid for
// LinkTTL and reusable until the merchant completes an authorization with
// it. When the tenant does not exist, a placeholder record is created
// (status pending, reason AwaitingFirstAuthorization) so
// that a later delete is detected by the callback. The link itself is not
// stored.
//
// Errors: ErrMisconfigured (wrapped) when the Onboarder is misconfigured;
// store errors (wrapped) when the tenant cannot be read or created.
func (o *Onboarder) AuthorizeLink(ctx context.Context, tenant string) (string, error) {
	return o.link(ctx, tenant, false)
}

// RebindLink is AuthorizeLink for a link that may connect another merchant
// account than the tenant's (admin {"rebind": true}). Errors as for
// AuthorizeLink.
func (o *Onboarder) RebindLink(ctx context.Context, tenant string) (string, error) {
	return o.link(ctx, tenant, true)
}

func (o *Onboarder) link(ctx context.Context, tenant string, rebind bool) (string, error) {
	if err := o.init(); err != nil {
		return "", err
	}
	if !store.ValidTenantID(tenant) {
		return "", fmt.Errorf("onboard: invalid tenant id %q", tenant)
	}
	now := o.now()
	t, err := o.Store.Get(ctx, tenant)
	if errors.Is(err, store.ErrNotFound) {
		t = &store.Tenant{
			ID: tenant, Provider: o.Preset.Name,
			Status: store.StatusPending, Reason: AwaitingFirstAuthorization,
			CreatedAt: now, UpdatedAt: now, LinkGeneration: store.NewLinkGeneration(),
		}
		_, err = o.Store.Put(ctx, t, 0)
		if errors.Is(err, store.ErrConflict) {
			// Created concurrently (another admin call, an import): use it.
			t, err = o.Store.Get(ctx, tenant)
		} else if err == nil {
			o.log.Info("onboarding placeholder created", zap.String("tenant", tenant))
		}
	}
	if err == nil && t.LinkGeneration == 0 {
		// A record from an import or an earlier version: give it a
		// generation, so this link (and every later one) dies with the
		// record: a tenant created again under the id starts without one.
		t, err = store.Update(ctx, o.Store, tenant, func(t *store.Tenant) error {
			if t.LinkGeneration != 0 {
				return store.ErrSkip
			}
			t.LinkGeneration = store.NewLinkGeneration()
			return nil
		})
		if errors.Is(err, store.ErrSkip) {
			err = nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("onboard: authorize link for %q: %w", tenant, err)
	}
	iat := now.Unix()
	// A link must not count as used by an authorization that finished
	// before it was issued, even within the same second.
	if !t.AuthorizedAt.IsZero() && t.AuthorizedAt.Unix() >= iat {
		iat = t.AuthorizedAt.Unix() + 1
	}
	if t.Candidate != nil && t.Candidate.ReceivedAt.Unix() >= iat {
		iat = t.Candidate.ReceivedAt.Unix() + 1
	}
	exp := now.Add(o.linkTTL()).Unix()
	q := url.Values{
		"tenant": {tenant},
		"iat":    {strconv.FormatInt(iat, 10)},
		"exp":    {strconv.FormatInt(exp, 10)},
		"sig":    {base64.RawURLEncoding.EncodeToString(o.linkMAC(tenant, iat, exp, t.LinkGeneration, rebind))},
	}
	if t.LinkGeneration != 0 {
		q.Set("gen", strconv.FormatInt(t.LinkGeneration, 10))
	}
	if rebind {
		q.Set("rebind", "1")
	}
	o.log.Info("authorize link issued", zap.String("tenant", tenant), zap.Time("expires", time.Unix(exp, 0).UTC()), zap.Bool("rebind", rebind))
	return o.startURL + "?" + q.Encode(), nil
}

// single returns the one value of q[key]; ok is false when it is missing,
// repeated or longer than maxCallbackValue.
func single(q url.Values, key string) (string, bool) {
	v := q[key]
	if len(v) != 1 || v[0] == "" || len(v[0]) > maxCallbackValue {
		return "", false
	}
	return v[0], true
}

// linkParams are a verified authorize link's parameters.
type linkParams struct {
	tenant        string
	iat, exp, gen int64
	rebind        bool
}

// parseLink checks an authorize link's parameters and signature.
func (o *Onboarder) parseLink(q url.Values) (linkParams, bool) {
	tenant, ok1 := single(q, "tenant")
	iatS, ok2 := single(q, "iat")
	expS, ok3 := single(q, "exp")
	sigS, ok4 := single(q, "sig")
	if !ok1 || !ok2 || !ok3 || !ok4 || !store.ValidTenantID(tenant) || len(q["rebind"]) > 1 || len(q["gen"]) > 1 {
		return linkParams{}, false
	}
	rebind := q.Get("rebind") == "1"
	iat, err1 := strconv.ParseInt(iatS, 10, 64)
	exp, err2 := strconv.ParseInt(expS, 10, 64)
	sig, err3 := base64.RawURLEncoding.DecodeString(sigS)
	var gen int64
	var err4 error
	if g := q.Get("gen"); g != "" {
		gen, err4 = strconv.ParseInt(g, 10, 64)
		if err4 == nil && gen <= 0 {
			err4 = errors.New("bad generation")
		}
	}
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || iat <= 0 || exp <= 0 {
		return linkParams{}, false
	}
	if !hmac.Equal(sig, o.linkMAC(tenant, iat, exp, gen, rebind)) {
		return linkParams{}, false
	}
	return linkParams{tenant: tenant, iat: iat, exp: exp, gen: gen, rebind: rebind}, true
}

// linkUsed: an authorization (or a candidate grant) was completed with a
// link issued at iat or earlier.
func linkUsed(t *store.Tenant, iat int64) bool {
	if t.Candidate != nil && t.Candidate.ReceivedAt.Unix() >= iat {
		return true
	}
	return !t.AuthorizedAt.IsZero() && t.AuthorizedAt.Unix() >= iat
}
