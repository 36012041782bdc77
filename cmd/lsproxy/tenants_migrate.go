package main

import (
	"context"
	"io"

	"github.com/spf13/cobra"
)

// `tenants import` and `tenants export` parse their own flags (see
// tenants_import.go, tenants_export.go): import talks to the admin API's
// bulk endpoint, export reads the store directly with the operator's key.
func init() {
	registerTenantsCommand(func(tc *tenantsCLI) *cobra.Command {
		return migrateCommand(tc, "import [--dry-run] FILE", "Import tenants from NDJSON through the admin API (per-line results)", tenantsImport)
	})
	registerTenantsCommand(func(tc *tenantsCLI) *cobra.Command {
		return migrateCommand(tc, "export [--config FILE] OUT", "Write every tenant, tokens included, to OUT (mode 0600) straight from the store", tenantsExport)
	})
}

func migrateCommand(tc *tenantsCLI, use, short string, run func(context.Context, []string, io.Writer, io.Writer) int) *cobra.Command {
	return &cobra.Command{
		Use:                use,
		Short:              short,
		DisableFlagParsing: true,
		// Not the admin client of the other tenants commands: these set
		// up what they need themselves.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, a := range args {
				if a == "-h" || a == "--help" || a == "-help" {
					run(tc.ctx, []string{"-h"}, tc.stdout, tc.stdout)
					return nil
				}
			}
			if code := run(tc.ctx, args, tc.stdout, tc.stderr); code != 0 {
				return fail(code, nil)
			}
			return nil
		},
	}
}
