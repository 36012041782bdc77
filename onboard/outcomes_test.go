package onboard_test

import (
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lsproxy/lsproxy/internal/emulator"
	"github.com/lsproxy/lsproxy/onboard"
)

// onboardingCounts gathers lsproxy_onboarding_total by outcome.
func onboardingCounts(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "lsproxy_onboarding_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	return out
}

// Every onboarding outcome is a series from the start; a completed flow
// counts authorized, a spent state state_invalid.
func TestOnboardingOutcomeMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	onboard.RegisterWebhookMetrics(reg, nil)
	before := onboardingCounts(t, reg)
	for _, o := range onboard.OnboardingOutcomes {
		if _, ok := before[o]; !ok {
			t.Errorf("outcome %q has no series before its first use", o)
		}
	}
	f := newFixture(t, fixOpts{mode: emulator.ModeKSeries, pkce: true})
	f.em.Approve("acme")
	r := f.open(f.link("acme"))
	if r.status != http.StatusOK {
		t.Fatalf("onboarding: %d", r.status)
	}
	mustFail(t, get(t, browser, r.url.String()), http.StatusBadRequest, "could not be matched")
	after := onboardingCounts(t, reg)
	if after["authorized"]-before["authorized"] < 1 || after["state_invalid"]-before["state_invalid"] < 1 {
		t.Fatalf("outcomes before %v after %v", before, after)
	}
}
