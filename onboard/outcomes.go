package onboard

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lsproxy/lsproxy/internal/httperr"
)

// OnboardingOutcomes are the outcome label values of
// lsproxy_onboarding_total: "authorized" for a merchant who completed the
// flow, else the error code of the page they saw (the httperr table's
// onboarding entries). Each series exists at 0 from the start.
var OnboardingOutcomes = []string{"authorized",
	httperr.LinkInvalid.Code, httperr.LinkExpired.Code, httperr.LinkUsed.Code, httperr.TenantGone.Code,
	httperr.StateInvalid.Code, httperr.CallbackIncomplete.Code, httperr.AccessDenied.Code,
	httperr.ProviderError.Code, httperr.OtherAccount.Code, httperr.IdentifyFailed.Code,
	httperr.CodeRejected.Code, httperr.ClientRejected.Code, httperr.ProviderDown.Code,
	httperr.StoreUnavailable.Code, httperr.OnboardingMisconfigured.Code, httperr.OnlyGet.Code}

// onboardingTotal counts every answer of /oauth/start and /oauth/callback by
// outcome. It is process-wide (the pages are), registered by
// RegisterWebhookMetrics; safe for concurrent use.
var onboardingTotal = sync.OnceValue(func() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lsproxy_onboarding_total",
		Help: "Answers of the onboarding flow by outcome: authorized (the merchant completed it) or the error code of the page shown (link_expired, access_denied, code_rejected, ...).",
	}, []string{"outcome"})
	for _, o := range OnboardingOutcomes {
		c.WithLabelValues(o)
	}
	return c
})

// countOutcome records one onboarding answer.
func countOutcome(p page) {
	switch {
	case p.Kind != nil:
		onboardingTotal().WithLabelValues(p.Kind.Code).Inc()
	case p.OK:
		onboardingTotal().WithLabelValues("authorized").Inc()
	}
}
