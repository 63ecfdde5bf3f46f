// Package tokenstest forges job tokens for tests: each differs from a
// valid token in exactly one way, so a verifier that accepts any of them has
// a specific hole. Used by the tokens unit tests and by the end-to-end tests
// that check the progress service answers 401 to each.
package tokenstest

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/claimcheck/claimcheck/tokens"
)

// Forged is one bad token and the reason a verifier must give for it (nil
// where several reasons are correct, e.g. a flipped byte that may break the
// JSON or only the signature).
type Forged struct {
	Name   string
	Token  string
	Reason error
}

// Valid signs an otherwise-valid job token for jobID with the set's active
// key, changed by mod (which may be nil).
func Valid(tb testing.TB, keys *tokens.KeySet, jobID string, now time.Time, mod func(c *tokens.JobClaims, h map[string]any)) string {
	tb.Helper()
	signer, err := keys.Signer()
	if err != nil {
		tb.Fatal(err)
	}
	return sign(tb, jwt.SigningMethodEdDSA, signer.Private, signer.ID, jobID, now, mod)
}

func sign(tb testing.TB, method jwt.SigningMethod, key any, kid, jobID string, now time.Time, mod func(c *tokens.JobClaims, h map[string]any)) string {
	tb.Helper()
	c := &tokens.JobClaims{
		Registered: tokens.Registered{
			Issuer: tokens.DefaultAPIIssuer, Audience: tokens.DefaultProgressAudience,
			Subject: "ann", ID: "forged", IssuedAt: now.Unix(), NotBefore: now.Unix(),
			ExpiresAt: now.Add(time.Hour).Unix(),
		},
		Job: jobID, Scope: strings.Join(tokens.JobScopes, " "),
	}
	tok := jwt.NewWithClaims(method, c)
	tok.Header["typ"] = tokens.TypeJob
	tok.Header["kid"] = kid
	if mod != nil {
		mod(c, tok.Header)
	}
	for k, v := range tok.Header {
		if v == nil {
			delete(tok.Header, k)
		}
	}
	s, err := tok.SignedString(key)
	if err != nil {
		tb.Fatalf("forge: %v", err)
	}
	return s
}

// JobTokens returns the forgeries for jobID. valid is a genuine token for
// the same job, whose bytes the tampering cases flip.
func JobTokens(tb testing.TB, keys *tokens.KeySet, jobID, valid string, now time.Time) []Forged {
	tb.Helper()
	signer, err := keys.Signer()
	if err != nil {
		tb.Fatal(err)
	}
	other, err := tokens.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	v := func(mod func(c *tokens.JobClaims, h map[string]any)) string { return Valid(tb, keys, jobID, now, mod) }
	header := func(k string, val any) func(*tokens.JobClaims, map[string]any) {
		return func(_ *tokens.JobClaims, h map[string]any) { h[k] = val }
	}
	parts := strings.Split(valid, ".")
	if len(parts) != 3 {
		tb.Fatalf("valid token has %d parts", len(parts))
	}
	return []Forged{
		{"empty", "", tokens.ErrMalformed},
		{"garbage", "not-a-token", tokens.ErrMalformed},
		{"three dots", "a.b.c", tokens.ErrMalformed},
		{"expired", v(func(c *tokens.JobClaims, _ map[string]any) { c.ExpiresAt = now.Add(-time.Hour).Unix() }), tokens.ErrExpired},
		{"no exp", v(func(c *tokens.JobClaims, _ map[string]any) { c.ExpiresAt = 0 }), tokens.ErrMalformed},
		{"not yet valid", v(func(c *tokens.JobClaims, _ map[string]any) { c.NotBefore = now.Add(time.Hour).Unix() }), tokens.ErrNotYetValid},
		{"issued in the future", v(func(c *tokens.JobClaims, _ map[string]any) { c.IssuedAt = now.Add(time.Hour).Unix() }), tokens.ErrNotYetValid},
		{"tampered payload", parts[0] + "." + flip(parts[1]) + "." + parts[2], nil},
		{"tampered signature", parts[0] + "." + parts[1] + "." + flip(parts[2]), tokens.ErrSignature},
		{"alg none", sign(tb, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, signer.ID, jobID, now, nil), tokens.ErrSignature},
		{"hs256 keyed with the public key", sign(tb, jwt.SigningMethodHS256, []byte(signer.Public), signer.ID, jobID, now, nil), tokens.ErrSignature},
		{"typ JWT", v(header("typ", "JWT")), tokens.ErrWrongType},
		{"typ at+jwt", v(header("typ", "at+jwt")), tokens.ErrWrongType},
		{"typ link+jwt", v(header("typ", "link+jwt")), tokens.ErrWrongType},
		{"no typ", v(header("typ", nil)), tokens.ErrWrongType},
		{"wrong aud", v(func(c *tokens.JobClaims, _ map[string]any) { c.Audience = "urn:claimcheck:gateway" }), tokens.ErrWrongAudience},
		{"wrong iss", v(func(c *tokens.JobClaims, _ map[string]any) { c.Issuer = "urn:evil" }), tokens.ErrWrongIssuer},
		{"unknown kid", sign(tb, jwt.SigningMethodEdDSA, other.Private, other.ID, jobID, now, nil), tokens.ErrUnknownKey},
		{"no kid", v(header("kid", nil)), tokens.ErrUnknownKey},
		{"known kid, other key", sign(tb, jwt.SigningMethodEdDSA, other.Private, signer.ID, jobID, now, nil), tokens.ErrSignature},
		{"jku header", v(header("jku", "https://evil.invalid/jwks.json")), tokens.ErrForbiddenHeader},
		{"x5u header", v(header("x5u", "https://evil.invalid/cert.pem")), tokens.ErrForbiddenHeader},
		{"jwk header", sign(tb, jwt.SigningMethodEdDSA, other.Private, other.ID, jobID, now, header("jwk", map[string]string{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"})), tokens.ErrForbiddenHeader},
		{"no job claim", v(func(c *tokens.JobClaims, _ map[string]any) { c.Job = "" }), tokens.ErrMalformed},
		{"no scope", v(func(c *tokens.JobClaims, _ map[string]any) { c.Scope = "" }), tokens.ErrMalformed},
		{"audience as array", arrayAudience(tb, signer, jobID, now), tokens.ErrMalformed},
		{"oversize", v(func(c *tokens.JobClaims, _ map[string]any) { c.Subject = strings.Repeat("x", tokens.MaxTokenSize) }), tokens.ErrTooLarge},
	}
}

// arrayAudience is a token like a valid one but with aud as a JSON array:
// legal JWT, but not what claimcheck mints, so it must be refused rather
// than half-read.
func arrayAudience(tb testing.TB, signer *tokens.Key, jobID string, now time.Time) string {
	tb.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"iss": tokens.DefaultAPIIssuer, "aud": []string{tokens.DefaultProgressAudience}, "sub": "ann", "jti": "forged",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(), "job": jobID, "scope": strings.Join(tokens.JobScopes, " "),
	})
	tok.Header["typ"] = tokens.TypeJob
	tok.Header["kid"] = signer.ID
	s, err := tok.SignedString(signer.Private)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// flip changes one character in the middle of a base64url segment.
func flip(s string) string {
	b := []byte(s)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// NewKeySet is a fresh key set with one active Ed25519 key.
func NewKeySet(tb testing.TB) *tokens.KeySet {
	tb.Helper()
	k, err := tokens.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	ks, err := tokens.NewKeySet(k)
	if err != nil {
		tb.Fatal(err)
	}
	return ks
}
