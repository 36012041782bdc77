package onboard

import (
	"testing"
	"time"
)

// TestBackoffJitter: the default backoff stays in the upper half of the
// exponential step (capped at 30 s) and is not constant.
func TestBackoffJitter(t *testing.T) {
	n := &Notifier{}
	for attempt := 1; attempt <= 8; attempt++ {
		step := min(time.Second<<min(attempt-1, 5), 30*time.Second)
		seen := map[time.Duration]bool{}
		for range 200 {
			d := n.backoff(attempt)
			if d < step/2 || d > step {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, step/2, step)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("attempt %d: only %d distinct waits in 200", attempt, len(seen))
		}
	}
}
