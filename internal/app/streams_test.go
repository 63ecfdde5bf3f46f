package app_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/app"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/tokens"
)

// reissue asks the api for another token for sub's job.
func (s *stack) reissue(t *testing.T, sub submitted, body string) (string, time.Time) {
	t.Helper()
	r := do(t, "POST", s.api.URL+"/v1/jobs/"+sub.ID+"/token", s.apiKey, strings.NewReader(body))
	if r.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(r.Body)
		t.Fatalf("reissue %s: %d %s", body, r.StatusCode, b)
	}
	tok := decode[struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}](t, r)
	return tok.Token, tok.ExpiresAt
}

func TestFinding8LinkNeverOutlivesItsToken(t *testing.T) {
	var skew atomic.Int64 // how far the progress service's clock is ahead
	s := newStack(t, func(c *app.Config) {
		c.Retention = time.Hour
		c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	sub := s.submit(t, `{"type":"primes","input":{"n":1000}}`)
	s.waitState(t, sub, jobs.StateSucceeded)
	ctx := context.Background()
	pttl, err := s.rdb.PTTL(ctx, jobs.KeyPrefixJob+sub.ID).Result()
	if err != nil || pttl <= 0 {
		t.Fatalf("record ttl %v %v", pttl, err)
	}
	recordExpiry := time.Now().Add(pttl)
	linkKeys, err := tokens.LoadDir(s.cfg.LinkKeyDir)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(link string, at time.Time) (*tokens.LinkClaims, error) {
		v := &tokens.LinkVerifier{Keys: linkKeys, Now: func() time.Time { return at }}
		return v.VerifyLink(link[strings.Index(link, "sig=")+4:])
	}
	type linkResp struct {
		URL       string    `json:"url"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	mint := func(token string) linkResp {
		r := do(t, "POST", s.progress.URL+"/v1/jobs/"+sub.ID+"/links", token, strings.NewReader(`{"expires_in":"24h"}`))
		if r.StatusCode != http.StatusCreated {
			b, _ := io.ReadAll(r.Body)
			t.Fatalf("create link: %d %s", r.StatusCode, b)
		}
		return decode[linkResp](t, r)
	}

	// A 30-second job:result token asks for a 24-hour link: it gets one
	// that ends with the token, and the response says so.
	short, tokenExp := s.reissue(t, sub, `{"scope":"job:result","expires_in":"30s"}`)
	link := mint(short)
	claims, err := verify(link.URL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if exp := claims.Expires(); exp.After(tokenExp) || !exp.Equal(link.ExpiresAt) {
		t.Fatalf("link exp %v, token exp %v, reported %v", exp, tokenExp, link.ExpiresAt)
	}
	// The submission's own token outlives the record (deadline plus
	// retention): its link ends with the record instead.
	long := mint(sub.Token)
	lc, err := verify(long.URL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if exp := lc.Expires(); exp.After(recordExpiry) || exp.After(sub.TokenExpiresAt) || !exp.Equal(long.ExpiresAt) {
		t.Fatalf("link exp %v, record expiry %v, token exp %v", exp, recordExpiry, sub.TokenExpiresAt)
	}

	// Past the token's exp (and the verifiers' leeway), the link is dead
	// at the service too.
	if r := do(t, "GET", s.progress.URL+link.URL, "", nil); r.StatusCode != http.StatusOK {
		t.Fatalf("fresh link: %d", r.StatusCode)
	}
	skew.Store(int64(time.Until(tokenExp) + tokens.DefaultLeeway + time.Second))
	r := do(t, "GET", s.progress.URL+link.URL, "", nil)
	if p := decode[problemBody](t, r); r.StatusCode != http.StatusUnauthorized || p.Type != "urn:claimcheck:problem:invalid-token" {
		t.Fatalf("link after its token's exp: %d %+v", r.StatusCode, p)
	}
	if r := do(t, "GET", s.progress.URL+long.URL, "", nil); r.StatusCode != http.StatusOK {
		t.Fatalf("the longer link at the same moment: %d", r.StatusCode)
	}
}
