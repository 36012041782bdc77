package main

import (
	"context"
	"fmt"
	"io"
)

// tenantsMigrate dispatches the migration commands of `lsproxy tenants`
// (import, export). The rest of the tenants command tree calls the admin
// API; export alone reads the store.
func tenantsMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	if len(args) == 0 {
		return 0, false
	}
	switch args[0] {
	case "import":
		return tenantsImport(ctx, args[1:], stdout, stderr), true
	case "export":
		return tenantsExport(ctx, args[1:], stdout, stderr), true
	}
	return 0, false
}

const tenantsMigrateUsage = `  lsproxy tenants import [--dry-run] FILE   import tenants from NDJSON through the admin API
  lsproxy tenants export [--config FILE] OUT  write every tenant, tokens included, to OUT (0600)
`

func tenantsUsage(w io.Writer) {
	fmt.Fprint(w, "Usage:\n"+tenantsMigrateUsage)
}
