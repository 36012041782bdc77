package onboard

import (
	"testing"
	"time"
)

// TestBackoffJitter: each wait stays within ±20 % of the schedule's, is
// not constant, and the schedule's end is reported.
func TestBackoffJitter(t *testing.T) {
	n := &Notifier{}
	for attempt := 1; attempt <= len(DefaultWebhookSchedule); attempt++ {
		step := DefaultWebhookSchedule[attempt-1]
		seen := map[time.Duration]bool{}
		for range 200 {
			d, ok := n.backoff(attempt)
			if !ok || d < step-step/5 || d > step+step/5 {
				t.Fatalf("attempt %d: %v %v outside ±20%% of %v", attempt, d, ok, step)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("attempt %d: only %d distinct waits in 200", attempt, len(seen))
		}
	}
	if _, ok := n.backoff(len(DefaultWebhookSchedule) + 1); ok {
		t.Error("a wait after the schedule's last attempt")
	}
	var total time.Duration
	for _, d := range DefaultWebhookSchedule {
		total += d
	}
	if total < 24*time.Hour {
		t.Errorf("default schedule spans %v, want at least 24 h", total)
	}
}
