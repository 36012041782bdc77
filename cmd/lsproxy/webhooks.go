package main

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/lsproxy/lsproxy/config"
	"github.com/lsproxy/lsproxy/control"
	"github.com/lsproxy/lsproxy/onboard"
	"github.com/lsproxy/lsproxy/store"
)

// newNotifier is the webhook Notifier of cfg on the store's outbox.
func newNotifier(cfg config.Config, s store.Store, log *zap.Logger) (*onboard.Notifier, error) {
	ob, ok := s.(store.Outbox)
	if !ok {
		return nil, fmt.Errorf("webhooks: the %T store has no outbox", s)
	}
	schedule, err := onboard.ParseSchedule(cfg.WebhookRetrySchedule)
	if err != nil {
		return nil, err
	}
	return &onboard.Notifier{
		URL:      cfg.WebhookURL,
		Secret:   cfg.WebhookSecret,
		Secrets:  cfg.WebhookSecrets,
		Outbox:   ob,
		Timeout:  cfg.WebhookTimeout,
		Schedule: schedule,
		Lease:    cfg.WebhookLease,
		Poll:     cfg.WebhookPollInterval,
		Logger:   log,
	}, nil
}

// waitNotifier waits up to d for the notifier to write its last events to
// the outbox (after the run context ended), so a graceful stop loses none.
func (a *app) waitNotifier(d time.Duration) {
	if a.notifier == nil {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-a.notifier.Done():
	case <-t.C:
		a.log.Warn("webhook notifier did not stop in time")
	}
}

// consoleOIDC is the console's OpenID Connect sign-in of cfg; nil when off.
func consoleOIDC(cfg config.Config) *control.ConsoleOIDC {
	if cfg.ConsoleOIDCIssuer == "" {
		return nil
	}
	return &control.ConsoleOIDC{
		Issuer: cfg.ConsoleOIDCIssuer, ClientID: cfg.ConsoleOIDCClientID, ClientSecret: cfg.ConsoleOIDCClientSecret,
		RedirectURL: cfg.ConsoleOIDCRedirectURL, AllowedEmails: cfg.ConsoleOIDCAllowedEmails, AllowedGroups: cfg.ConsoleOIDCAllowedGroups,
	}
}
