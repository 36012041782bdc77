package httperr

import (
	"context"
	"errors"
	"net"
)

// IsTimeout reports whether err is a deadline or a network timeout.
func IsTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// NetReason describes a transport error in a word or two, without the URL,
// address or body an error's string may carry: "timeout", "canceled",
// "<op> error" (dial, read, write) or "connection error".
func NetReason(err error) string {
	switch {
	case IsTimeout(err):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Op + " error"
	}
	return "connection error"
}
