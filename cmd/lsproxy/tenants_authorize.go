package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

func init() { registerTenantsCommand(tenantsAuthorizeCommand) }

func tenantsAuthorizeCommand(tc *tenantsCLI) *cobra.Command {
	return &cobra.Command{
		Use:   "authorize TENANT",
		Short: "Print an onboarding link to send the merchant",
		Long: `Ask for an authorization link for TENANT (new or flagged) and print it. Send it
to the merchant: opening it starts the OAuth flow, and the callback stores the
grant and clears a reauthorization_required flag.`,
		Args:              tenantArg,
		ValidArgsFunction: tc.completeTenantIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := tc.client.do(cmd.Context(), "POST", tenantPath(args[0], "authorize"), nil, nil)
			if err != nil {
				return err
			}
			if tc.output == "json" {
				return printJSON(tc.stdout, data)
			}
			var body struct {
				AuthorizeURL string `json:"authorize_url"`
			}
			if err := json.Unmarshal(data, &body); err != nil || body.AuthorizeURL == "" {
				return fail(exitFailure, fmt.Errorf("the admin API answered without authorize_url"))
			}
			fmt.Fprintln(tc.stdout, body.AuthorizeURL)
			return nil
		},
	}
}
