package config

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
)

// Limits on secrets, checked by Validate (serve and check-config).
const (
	// MinAdminTokenLength is the shortest admin token accepted: it guards
	// every tenant's grant. `openssl rand -hex 32` makes one of 64.
	MinAdminTokenLength = 16
	// MinWebhookSecretLength is the shortest plain (not whsec_) webhook
	// secret accepted, in bytes.
	MinWebhookSecretLength = 16
	// MinWebhookKeyBytes is the shortest key a "whsec_" secret may decode
	// to: Standard Webhooks asks for 24 to 64 random bytes.
	MinWebhookKeyBytes = 24
	// CallbackPath is the path of the control listener's OAuth callback,
	// which the redirect URL must name.
	CallbackPath = "/oauth/callback"
)

// secrets checks the admin token, the webhook secret and the URLs that go
// with them; required is true for serve and check-config.
func (v *validator) secrets(c Config, required bool) {
	if required && c.AdminToken != "" && len(c.AdminToken) < MinAdminTokenLength {
		v.add("AdminToken", "must be at least %d characters (make one with: openssl rand -hex 32); got %d", MinAdminTokenLength, len(c.AdminToken))
	}
	if c.RedirectURL != "" {
		if u, err := url.Parse(c.RedirectURL); err == nil && u.Host != "" && u.Path != CallbackPath {
			v.add("RedirectURL", "must end in the path %s (the control listener's callback, registered with the provider); got the path %q", CallbackPath, u.Path)
		}
	}
	if c.WebhookURL != "" && c.WebhookSecret == "" {
		v.add("WebhookSecret", "is required when LSPROXY_WEBHOOK_URL (webhook_url) is set: receivers must be able to verify each event (make one with: echo \"whsec_$(head -c 32 /dev/urandom | base64)\")")
	}
	if c.WebhookSecret != "" {
		if p := webhookSecretProblem(c.WebhookSecret); p != "" {
			v.add("WebhookSecret", "%s", p)
		}
	}
}

// webhookSecretProblem checks a webhook secret as Standard Webhooks defines
// it: "whsec_" followed by standard base64 of 24 to 64 bytes; a secret
// without the prefix is used as raw bytes and needs MinWebhookSecretLength.
// The message never contains the secret.
func webhookSecretProblem(s string) string {
	rest, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		if len(s) < MinWebhookSecretLength {
			return "must be at least 16 bytes; the Standard Webhooks form is whsec_ + base64 of 24 to 64 random bytes"
		}
		return ""
	}
	k, err := base64.StdEncoding.DecodeString(rest)
	switch {
	case err != nil:
		return "starts with whsec_ but the rest is not standard base64 (Standard Webhooks verifiers would reject every signature)"
	case len(k) < MinWebhookKeyBytes || len(k) > 64:
		return fmt.Sprintf("starts with whsec_ but decodes to %d bytes; Standard Webhooks asks for 24 to 64", len(k))
	}
	return ""
}

// Warnings returns what is legal but probably a mistake, for check-config
// and serve's log: nothing of the control plane is on (no admin API, no
// console, no onboarding), so no tenant can be added or looked after.
func (c Config) Warnings() []string {
	var w []string
	if c.AdminToken == "" && c.RedirectURL == "" {
		w = append(w, "the admin API, the console and onboarding are all off (LSPROXY_ADMIN_TOKEN and LSPROXY_REDIRECT_URL unset): no tenant can be added, re-authorized or inspected")
	}
	return w
}
