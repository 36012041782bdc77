package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrUnknownEnv: an LSPROXY_* environment variable names no option.
var ErrUnknownEnv = errors.New("config: unknown environment variable")

// UnknownEnv returns one error (wrapping ErrUnknownEnv) per LSPROXY_*
// variable in environ that is neither an option (Names) nor in extra
// (variables other parts of lsproxy read, such as the CLI's
// LSPROXY_ADMIN_URL), with the closest known name as a suggestion. A
// mistyped LSPROXY_REDIS_ULR would otherwise silently leave the embedded
// store in use. Values are never part of the error. Sorted by name.
func UnknownEnv(environ []string, extra ...string) []error {
	return unknownEnv(environ, len(EnvPrefix)+100, extra)
}

// MaxTypoDistance: an unknown LSPROXY_* variable within this many edits of
// a known one is taken for a typo of it, which serve refuses to start with
// (MistypedEnv). Others only warn, so that a variable meant for a newer
// version does not stop an older replica during a rolling upgrade.
const MaxTypoDistance = 2

// MistypedEnv returns the UnknownEnv errors of variables within
// MaxTypoDistance edits of a known name (LSPROXY_REDIS_ULR), each saying
// which name was probably meant.
func MistypedEnv(environ []string, extra ...string) []error {
	return unknownEnv(environ, MaxTypoDistance, extra)
}

// unknownEnv is UnknownEnv limited to names whose suggestion is at most
// maxDist edits away.
func unknownEnv(environ []string, maxDist int, extra []string) []error {
	known := append(Names(), extra...)
	var names []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, EnvPrefix) && !slices.Contains(known, k) && !slices.Contains(names, k) {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	errs := make([]error, 0, len(names))
	for _, n := range names {
		s := suggest(n, known)
		switch {
		case s != "" && editDistance(n, s) <= maxDist:
			errs = append(errs, fmt.Errorf("%w: %s (did you mean %s?)", ErrUnknownEnv, n, s))
		case maxDist > MaxTypoDistance && s == "":
			errs = append(errs, fmt.Errorf("%w: %s (see config.example.yaml for the known ones)", ErrUnknownEnv, n))
		case maxDist > MaxTypoDistance:
			errs = append(errs, fmt.Errorf("%w: %s (did you mean %s?)", ErrUnknownEnv, n, s))
		}
	}
	return errs
}

// suggest returns the candidate closest to s by edit distance, if it is
// close enough to be a typo (at most a third of the length), else "".
func suggest(s string, candidates []string) string {
	best, bestD := "", len(s)/3+1
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b (bytes; names are ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
