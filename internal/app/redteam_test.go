package app_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

// Holes the red team's black-box re-test of issue 10 found around the
// fixes; each test failed on the main it was written against.

// TestRedteamSubSecondLinkExpiryIsInvalidRequest: a link asked for with an
// expires_in under a second is a bad request (422 naming expires_in), not a
// 401 invalid-token that tells the holder its perfectly good token is dead
// (links end on a whole second, so such a link would end before it starts).
func TestRedteamSubSecondLinkExpiryIsInvalidRequest(t *testing.T) {
	s := newStack(t)
	sub := s.submit(t, `{"type":"primes","input":{"n":1000}}`)
	s.waitState(t, sub, jobs.StateSucceeded)
	for _, d := range []string{"1ns", "500ms", "999ms"} {
		r := do(t, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/links", sub.Token, strings.NewReader(`{"expires_in":"`+d+`"}`))
		p := decode[problemBody](t, r)
		if r.StatusCode != http.StatusUnprocessableEntity || p.Type != "urn:claimcheck:problem:invalid-request" {
			t.Errorf("expires_in %s: %d %s %q", d, r.StatusCode, p.Type, p.Detail)
		}
	}
	// The token still works, and a one-second link is fine.
	if r := do(t, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/links", sub.Token, strings.NewReader(`{"expires_in":"1s"}`)); r.StatusCode != http.StatusCreated {
		t.Fatalf("expires_in 1s: %d", r.StatusCode)
	}
}
