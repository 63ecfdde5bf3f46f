package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

// newHealthcheck is the probe for container healthchecks: the image has no
// shell or curl, so the binary checks itself.
func newHealthcheck() *cobra.Command {
	return &cobra.Command{
		Use:   "healthcheck URL",
		Short: "Exit 0 if URL (e.g. http://127.0.0.1:8080/readyz) answers 2xx within 3 s",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("unhealthy: %w", err)
			}
			resp.Body.Close()
			if resp.StatusCode < 200 || resp.StatusCode > 299 {
				return fmt.Errorf("unhealthy: %s", resp.Status)
			}
			return nil
		},
	}
}
