package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/app/devstack"
	"github.com/claimcheck/claimcheck/client"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// Submit a job, wait for it, and print its result.
func Example() {
	// A claimcheck for the example to talk to (it lives until the tests end).
	dir, _ := os.MkdirTemp("", "claimcheck-example-")
	stack, err := devstack.Run(redistest.Open(),
		devstack.Options{Config: app.Config{DataDir: dir}}, func(func()) {})
	if err != nil {
		fmt.Println(err)
		return
	}
	url, apiKey := stack.URL, stack.APIKey
	ctx := context.Background()

	c := client.New(url, client.WithCredential(apiKey))
	job, err := c.Submit(ctx, client.SubmitRequest{Type: "primes", Input: json.RawMessage(`{"n":100}`)})
	if err != nil {
		fmt.Println(err)
		return
	}
	final, err := c.Wait(ctx, job.ID, job.Token, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(final.State)
	if _, err := c.Download(ctx, job.ID, job.Token, os.Stdout); err != nil {
		fmt.Println(err)
	}
	// Output:
	// succeeded
	// {"n":100,"count":25,"largest":97}
}
