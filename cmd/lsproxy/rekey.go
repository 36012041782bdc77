package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/lsproxy/lsproxy/config"
	"github.com/lsproxy/lsproxy/store"
)

// rekeyAttempts bounds the compare-and-set retries for one record that
// keeps being written while rekey runs.
const rekeyAttempts = 10

// rekey is `lsproxy rekey [--config FILE]`: it re-encrypts every
// tenant record with the primary key (LSPROXY_ENCRYPTION_KEY), reading
// records sealed with any key in LSPROXY_ENCRYPTION_KEYS. It is safe while
// replicas run on Redis (compare-and-set, bounded retries); the embedded
// store is one process's, so serve must be stopped first. It prints counts
// and exits 1 if any record failed.
func rekey(ctx context.Context, path string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(path, os.Environ())
	if err != nil {
		fmt.Fprintln(stderr, "lsproxy rekey: configuration:", err)
		return 1
	}
	// Only the store and the keys matter here; the OAuth client is not needed.
	problems := cfg.Validate(config.ModeDev)
	if cfg.EncryptionKey == "" {
		problems = append(problems, errors.New("LSPROXY_ENCRYPTION_KEY (encryption_key) is required: the new key, which re-encrypts; list the old keys in LSPROXY_ENCRYPTION_KEYS (encryption_keys)"))
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "lsproxy rekey: %d configuration problem(s):\n", len(problems))
		for _, p := range problems {
			fmt.Fprintln(stderr, "  -", p)
		}
		return 1
	}
	keys, err := store.ParseKeys(append([]string{cfg.EncryptionKey}, cfg.EncryptionKeys...)...)
	if err != nil {
		fmt.Fprintln(stderr, "lsproxy rekey:", err)
		return 1
	}
	s, kind, err := openStore(ctx, cfg, keys, nil)
	if errors.Is(err, store.ErrLocked) {
		fmt.Fprintf(stderr, "lsproxy rekey: %v\nThe embedded store serves one process: stop lsproxy serve, run rekey, then start it again.\n", err)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "lsproxy rekey: opening the store:", err)
		return 1
	}
	defer s.Close()

	fmt.Fprintf(stdout, "rekey: %s store; encrypting with key %s; keys that decrypt: %s\n",
		kind, keys.PrimaryID(), strings.Join(keys.IDs(), ", "))
	ids, err := s.List(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "lsproxy rekey: listing tenants:", err)
		return 1
	}
	var rewritten, current, gone, failed int
	for i, id := range ids {
		if ctx.Err() != nil {
			failed += len(ids) - i
			fmt.Fprintf(stderr, "lsproxy rekey: interrupted; %d records not processed\n", len(ids)-i)
			break
		}
		outcome, err := store.Rekey(ctx, s, id, rekeyAttempts)
		switch {
		case err != nil:
			failed++
			// The error names the tenant and, for a record no key opens,
			// the key id that sealed it and the configured ones; never a token.
			fmt.Fprintf(stderr, "lsproxy rekey: tenant %q: %v\n", id, err)
		case outcome == store.RekeyRewritten:
			rewritten++
		case outcome == store.RekeyCurrent:
			current++
		case outcome == store.RekeyGone:
			gone++
		}
	}
	fmt.Fprintf(stdout, "rekey: %d records, %d re-encrypted, %d already current, %d failed", len(ids), rewritten, current, failed)
	if gone > 0 {
		fmt.Fprintf(stdout, ", %d deleted meanwhile", gone)
	}
	fmt.Fprintln(stdout)
	if failed > 0 {
		fmt.Fprintln(stderr, "lsproxy rekey: some records were not re-encrypted; keep the old keys in LSPROXY_ENCRYPTION_KEYS and run rekey again (a record no configured key opens needs its key added, or the tenant re-onboarded)")
		return 1
	}
	if len(keys.IDs()) > 1 {
		fmt.Fprintf(stdout, "rekey: every record is encrypted with key %s; once every replica runs with it as LSPROXY_ENCRYPTION_KEY, the older keys can be removed from LSPROXY_ENCRYPTION_KEYS\n",
			keys.PrimaryID())
	}
	return 0
}
