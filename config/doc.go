// Package config holds lsproxy's configuration: defaults in code, then an
// optional YAML file, then LSPROXY_* environment variables.
//
// Every option has exactly one environment variable (LSPROXY_ + upper-case
// name) and one YAML key (the lower-case name without the prefix), e.g.
// LSPROXY_CONTROL_LISTEN and control_listen. Secrets can also be read from a
// file named by the matching *_FILE option. Defaults that a constructor also
// applies are the owning package's Default* constants, so each is stated
// once.
//
// Config is a plain value: it has no internal state, and every function and
// method in this package is safe for concurrent use.
//
// Files:
//   - config.go: Config, its field names, Load (YAML file, *_FILE secrets).
//   - defaults.go: Default and DefaultLockTTL.
//   - env.go: reading LSPROXY_* environment variables.
//   - unknown.go: UnknownEnv, LSPROXY_* variables that name no option.
//   - validate.go: Validate, reporting every problem at once.
//   - checks.go: the admin token's and webhook secret's rules, the
//     redirect URL's path, Warnings.
//   - redact.go: Redacted, a copy safe to print.
//   - bytesize.go: ByteSize (256MiB), the container's memory limit and the
//     token cache's bound derived from it (EffectiveCacheMaxBytes).
package config
