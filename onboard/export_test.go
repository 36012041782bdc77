package onboard

import "sync"

// ResetForbiddenHint lets a test see the once-per-process hint again.
func ResetForbiddenHint() { forbiddenOnce = sync.Once{} }
