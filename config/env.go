package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/caarlos0/env/v11"
)

// Reading LSPROXY_* environment variables over the file and the defaults.

// environMap turns "KEY=value" lines into a map; the first occurrence of a
// key wins, as with os.Getenv. It never returns nil (env.Options treats a nil
// Environment as "read the process environment").
func environMap(environ []string) map[string]string {
	m := make(map[string]string)
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		if _, dup := m[k]; !dup {
			m[k] = v
		}
	}
	return m
}

// splitList splits on whitespace and commas, dropping empty items.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	})
}

func (c *Config) loadEnv(envMap map[string]string) []error {
	var errs []error
	// Secrets: both forms in the environment is an error; one form in the
	// environment replaces either form from the file.
	for _, s := range secrets {
		v, f := envMap[byName[s.value].env], envMap[byName[s.file].env]
		switch {
		case v != "" && f != "":
			errs = append(errs, fmt.Errorf("%w: %s and %s are both set; use one",
				ErrSecretConflict, byName[s.value].env, byName[s.file].env))
		case v != "":
			*c.str(s.file) = ""
		case f != "":
			*c.str(s.value) = ""
		}
	}

	// ClientKeys contain commas, so they are split on whitespace only and
	// kept away from the generic []string parser.
	clientKeysEnv := byName["ClientKeys"].env
	rest := make(map[string]string, len(envMap))
	for k, v := range envMap {
		if k != clientKeysEnv {
			rest[k] = v
		}
	}
	if v := envMap[clientKeysEnv]; strings.TrimSpace(v) != "" {
		c.ClientKeys = strings.Fields(v)
	}

	err := env.ParseWithOptions(c, env.Options{
		Prefix:      EnvPrefix,
		Environment: rest,
		FuncMap: map[reflect.Type]env.ParserFunc{
			reflect.TypeFor[[]string](): func(v string) (any, error) { return splitList(v), nil },
		},
	})
	if err == nil {
		return errs
	}
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return append(errs, fmt.Errorf("%w: %w", ErrEnv, err))
	}
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if _, ok := byName[pe.Name]; ok {
				errs = append(errs, fmt.Errorf("%w: %s: %w", ErrEnv, names(pe.Name), pe.Err))
				continue
			}
		}
		errs = append(errs, fmt.Errorf("%w: %w", ErrEnv, e))
	}
	return errs
}
