package config

import (
	"strings"
	"testing"
	"time"
)

// TestValidateWebhookAndConsoleOIDC: the webhook outbox options and the
// console's OIDC sign-in, each problem named by its variable; none echoes
// a secret.
func TestValidateWebhookAndConsoleOIDC(t *testing.T) {
	oidcOn := func(c *Config) {
		c.AdminToken = "admin-" + leak
		c.ConsoleOIDCIssuer = "https://id.example.com"
		c.ConsoleOIDCClientID = "lsproxy"
		c.ConsoleOIDCClientSecret = leak
		c.ConsoleOIDCRedirectURL = "https://lsproxy.example.com/console/oidc/callback"
		c.ConsoleOIDCAllowedGroups = []string{"ops"}
	}
	for _, tt := range []struct {
		name   string
		mutate func(c *Config)
		want   []string
	}{
		{"webhook defaults", func(c *Config) {
			c.WebhookURL, c.WebhookSecret = "https://hooks.example.com/x", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		}, nil},
		{"schedule", func(c *Config) { c.WebhookRetrySchedule = "1s, 2m,3h" }, nil},
		{"schedule bad", func(c *Config) { c.WebhookRetrySchedule = "1s,soon" }, []string{"LSPROXY_WEBHOOK_RETRY_SCHEDULE (webhook_retry_schedule) must be comma-separated positive durations"}},
		{"schedule zero", func(c *Config) { c.WebhookRetrySchedule = "0s" }, []string{"LSPROXY_WEBHOOK_RETRY_SCHEDULE"}},
		{"lease not above timeout", func(c *Config) {
			c.WebhookURL, c.WebhookSecret, c.WebhookTimeout, c.WebhookLease = "https://hooks.example.com/x", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 15*time.Second, 15*time.Second
		}, []string{"LSPROXY_WEBHOOK_LEASE (webhook_lease) must be longer than LSPROXY_WEBHOOK_TIMEOUT"}},
		{"poll zero", func(c *Config) {
			c.WebhookURL, c.WebhookSecret, c.WebhookPollInterval = "https://hooks.example.com/x", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 0
		}, []string{"LSPROXY_WEBHOOK_POLL_INTERVAL (webhook_poll_interval) must be greater than 0"}},
		{"oidc complete", oidcOn, nil},
		{"oidc without secret", func(c *Config) { oidcOn(c); c.ConsoleOIDCClientSecret = "" }, []string{"LSPROXY_CONSOLE_OIDC_CLIENT_SECRET (console_oidc_client_secret) is required"}},
		{"oidc redirect path", func(c *Config) { oidcOn(c); c.ConsoleOIDCRedirectURL = "https://lsproxy.example.com/callback" }, []string{"LSPROXY_CONSOLE_OIDC_REDIRECT_URL (console_oidc_redirect_url) must end in /console/oidc/callback"}},
		{"oidc nobody allowed", func(c *Config) { oidcOn(c); c.ConsoleOIDCAllowedGroups = nil }, []string{"LSPROXY_CONSOLE_OIDC_ALLOWED_EMAILS (console_oidc_allowed_emails) or LSPROXY_CONSOLE_OIDC_ALLOWED_GROUPS"}},
		{"oidc without admin token", func(c *Config) { oidcOn(c); c.AdminToken = "" }, []string{"LSPROXY_CONSOLE_OIDC_ISSUER (console_oidc_issuer) needs LSPROXY_ADMIN_TOKEN"}},
		{"oidc client without issuer", func(c *Config) { c.ConsoleOIDCClientID = "x" }, []string{"LSPROXY_CONSOLE_OIDC_CLIENT_ID (console_oidc_client_id) is set but LSPROXY_CONSOLE_OIDC_ISSUER"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(&c)
			errs := c.Validate(ModeServe)
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d errors %v, want %d %q", len(errs), errs, len(tt.want), tt.want)
			}
			for i, err := range errs {
				if !strings.Contains(err.Error(), tt.want[i]) {
					t.Errorf("error %d = %q, want %q", i, err, tt.want[i])
				}
				if strings.Contains(err.Error(), leak) {
					t.Errorf("error leaks the secret: %q", err)
				}
			}
		})
	}
	// The OIDC client secret and the webhook secrets are redacted.
	c := validConfig()
	oidcOn(&c)
	c.WebhookSecrets = []string{leak}
	r := c.Redacted()
	if r.ConsoleOIDCClientSecret == leak || r.WebhookSecrets[0] == leak || c.WebhookSecrets[0] != leak {
		t.Errorf("redacted: %q %q (original %q)", r.ConsoleOIDCClientSecret, r.WebhookSecrets, c.WebhookSecrets)
	}
}
