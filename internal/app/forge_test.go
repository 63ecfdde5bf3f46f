package app_test

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/claimcheck/claimcheck/tokens"
)

// forgedTokens returns, by name, tokens for sub's job that must all be
// refused with 401: each differs from a valid token in one way.
func forgedTokens(t *testing.T, keys *tokens.KeySet, sub submitted) map[string]string {
	t.Helper()
	signer, err := keys.Signer()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claims := func(mod func(c *tokens.JobClaims)) *tokens.JobClaims {
		c := &tokens.JobClaims{
			RegisteredClaims: jwt.RegisteredClaims{
				Issuer: tokens.DefaultAPIIssuer, Audience: jwt.ClaimStrings{tokens.DefaultProgressAudience},
				Subject: "ann", ID: "forged", IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
				ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
			},
			Job: sub.ID, Scope: strings.Join(tokens.JobScopes, " "),
		}
		if mod != nil {
			mod(c)
		}
		return c
	}
	sign := func(method jwt.SigningMethod, key any, hdr map[string]any, c *tokens.JobClaims) string {
		tok := jwt.NewWithClaims(method, c)
		tok.Header["typ"] = tokens.TypeJob
		tok.Header["kid"] = signer.ID
		for k, v := range hdr {
			if v == nil {
				delete(tok.Header, k)
			} else {
				tok.Header[k] = v
			}
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatalf("forge: %v", err)
		}
		return s
	}
	ed := jwt.SigningMethodEdDSA
	// Sanity: the forge itself makes tokens the verifier accepts, so each
	// refusal below is caused by its one difference.
	if _, err := (&tokens.Verifier{Keys: keys}).VerifyJob(sign(ed, signer.Private, nil, claims(nil))); err != nil {
		t.Fatalf("forge baseline does not verify: %v", err)
	}
	other, err := tokens.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(sub.Token, ".")
	tamperedPayload := parts[0] + "." + flip(parts[1]) + "." + parts[2]
	tamperedSig := parts[0] + "." + parts[1] + "." + flip(parts[2])

	return map[string]string{
		"missing":                         "",
		"garbage":                         "not-a-token",
		"three dots":                      "a.b.c",
		"expired":                         sign(ed, signer.Private, nil, claims(func(c *tokens.JobClaims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Hour)) })),
		"no exp":                          sign(ed, signer.Private, nil, claims(func(c *tokens.JobClaims) { c.ExpiresAt = nil })),
		"not yet valid":                   sign(ed, signer.Private, nil, claims(func(c *tokens.JobClaims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Hour)) })),
		"tampered payload":                tamperedPayload,
		"tampered signature":              tamperedSig,
		"alg none":                        sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil, claims(nil)),
		"hs256 with public key as secret": sign(jwt.SigningMethodHS256, []byte(signer.Public), nil, claims(nil)),
		"wrong typ JWT":                   sign(ed, signer.Private, map[string]any{"typ": "JWT"}, claims(nil)),
		"wrong typ at+jwt":                sign(ed, signer.Private, map[string]any{"typ": "at+jwt"}, claims(nil)),
		"no typ":                          sign(ed, signer.Private, map[string]any{"typ": nil}, claims(nil)),
		"wrong aud":                       sign(ed, signer.Private, nil, claims(func(c *tokens.JobClaims) { c.Audience = jwt.ClaimStrings{"urn:claimcheck:gateway"} })),
		"wrong iss":                       sign(ed, signer.Private, nil, claims(func(c *tokens.JobClaims) { c.Issuer = "urn:evil" })),
		"unknown kid":                     sign(ed, other.Private, map[string]any{"kid": other.ID}, claims(nil)),
		"no kid":                          sign(ed, signer.Private, map[string]any{"kid": nil}, claims(nil)),
		"right kid wrong key":             sign(ed, other.Private, nil, claims(nil)),
		"jku header":                      sign(ed, signer.Private, map[string]any{"jku": "https://evil.example/jwks.json"}, claims(nil)),
		"jwk header":                      sign(ed, other.Private, map[string]any{"jwk": map[string]string{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}}, claims(nil)),
		"oversize":                        sign(ed, signer.Private, nil, claims(func(c *tokens.JobClaims) { c.Subject = strings.Repeat("x", 5000) })),
	}
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
