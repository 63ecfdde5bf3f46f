package tokens

import (
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Registered are the RFC 7519 claims every token kind carries, embedded in
// each kind's claims. They are plain fields with integer dates and a single
// audience rather than jwt.RegisteredClaims: its NumericDate and
// ClaimStrings each run a nested json.Unmarshal, which made up a third of
// verification's cost beyond the signature check. golang-jwt still does all
// parsing and validation through the jwt.Claims methods below. Tokens with
// fractional dates or an audience array are refused as malformed; only
// claimcheck mints these.
type Registered struct {
	Issuer    string `json:"iss"`
	Subject   string `json:"sub,omitempty"`
	Audience  string `json:"aud"`
	ExpiresAt int64  `json:"exp,omitempty"`
	NotBefore int64  `json:"nbf,omitempty"`
	IssuedAt  int64  `json:"iat,omitempty"`
	ID        string `json:"jti"`
}

// Expires is exp as a time.
func (c *Registered) Expires() time.Time { return time.Unix(c.ExpiresAt, 0).UTC() }

// checkLifetime refuses a token whose exp-iat exceeds limit: every kind
// caps how long one of its tokens may live, whatever its minter asked.
func (c *Registered) checkLifetime(limit time.Duration) error {
	if time.Duration(c.ExpiresAt-c.IssuedAt)*time.Second > limit {
		return &verifyError{reason: ErrMalformed, cause: fmt.Errorf("lifetime over %v", limit)}
	}
	return nil
}

// GetExpirationTime implements jwt.Claims.
func (c *Registered) GetExpirationTime() (*jwt.NumericDate, error) {
	return numericDate(c.ExpiresAt), nil
}

// GetNotBefore implements jwt.Claims.
func (c *Registered) GetNotBefore() (*jwt.NumericDate, error) { return numericDate(c.NotBefore), nil }

// GetIssuedAt implements jwt.Claims.
func (c *Registered) GetIssuedAt() (*jwt.NumericDate, error) { return numericDate(c.IssuedAt), nil }

// GetIssuer implements jwt.Claims.
func (c *Registered) GetIssuer() (string, error) { return c.Issuer, nil }

// GetSubject implements jwt.Claims.
func (c *Registered) GetSubject() (string, error) { return c.Subject, nil }

// GetAudience implements jwt.Claims.
func (c *Registered) GetAudience() (jwt.ClaimStrings, error) {
	if c.Audience == "" {
		return nil, nil
	}
	return jwt.ClaimStrings{c.Audience}, nil
}

// numericDate is nil for an absent (zero) date, so WithExpirationRequired
// sees a missing exp as missing.
func numericDate(unix int64) *jwt.NumericDate {
	if unix == 0 {
		return nil
	}
	return jwt.NewNumericDate(time.Unix(unix, 0))
}

// parsing is what a verifier of one token kind builds once: golang-jwt's
// parser with the kind's issuer, audience and leeway, and a key function
// that checks the kind's typ and finds keys by kid in a known set.
type parsing struct {
	once    sync.Once
	parser  *jwt.Parser
	keyfunc jwt.Keyfunc
}

func (p *parsing) init(keys KeySource, typ, issuer, audience string, leeway time.Duration, now func() time.Time) {
	p.once.Do(func() {
		if leeway == 0 {
			leeway = DefaultLeeway
		}
		opts := []jwt.ParserOption{jwt.WithIssuer(issuer), jwt.WithAudience(audience), jwt.WithLeeway(leeway)}
		if now != nil {
			opts = append(opts, jwt.WithTimeFunc(now))
		}
		p.parser = newParser(opts...)
		p.keyfunc = keyfunc(keys, typ)
	})
}
