package auth

import (
	"context"
	"time"
)

// backoff is the one retry delay of the token manager: it doubles from
// first up to limit. Not safe for concurrent use (one per loop).
type backoff struct{ next, limit time.Duration }

func newBackoff(first, limit time.Duration) *backoff { return &backoff{next: first, limit: limit} }

// wait sleeps the next delay, or returns ctx's error when ctx ends first.
func (b *backoff) wait(ctx context.Context) error {
	t := time.NewTimer(b.next)
	defer t.Stop()
	b.next = min(2*b.next, b.limit)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
