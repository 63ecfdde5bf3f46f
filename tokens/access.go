package tokens

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	gojson "github.com/goccy/go-json"
)

// TypeAccess is the typ header of an internal access token (RFC 9068 §2.1).
const TypeAccess = "at+jwt"

// Defaults for internal access tokens.
const (
	DefaultGatewayIssuer    = "urn:claimcheck:gateway"
	DefaultServicesAudience = "urn:claimcheck:services"
	DefaultGatewayClientID  = "claimcheck-gateway"
	// MaxAccessLifetime is the longest an internal token lives. Services
	// refuse longer ones, so even a leaked gateway key cannot mint a token
	// that outlasts a revocation by more than this.
	MaxAccessLifetime = 60 * time.Second
)

// AccessClaims are an internal token's claims (RFC 9068 §2.2): who (sub),
// through which session (sid, absent for an API key), allowed what (scope),
// for how long (at most MaxAccessLifetime). Flat like JobClaims, for the
// same reason.
type AccessClaims struct {
	Registered
	ClientID  string `json:"client_id"`
	SessionID string `json:"sid,omitempty"`
	// KeyID names the API key the token was minted from (absent for a
	// session): not a secret, only what a service needs to confirm the key
	// is still live before the token may derive a longer-lived credential.
	KeyID string `json:"key_id,omitempty"`
	Scope string `json:"scope"`
}

// Scopes splits Scope.
func (c *AccessClaims) Scopes() []string { return strings.Fields(c.Scope) }

// HasScope reports whether the token carries s.
func (c *AccessClaims) HasScope(s string) bool { return slices.Contains(c.Scopes(), s) }

type accessClaimsFields AccessClaims

// UnmarshalJSON decodes with goccy/go-json, as JobClaims does.
func (c *AccessClaims) UnmarshalJSON(data []byte) error {
	return gojson.Unmarshal(data, (*accessClaimsFields)(c))
}

// AccessMinter signs internal tokens with a key set's active key (the
// gateway's own keys, never the api's job-token keys).
type AccessMinter struct {
	Keys     *KeySet
	Issuer   string // DefaultGatewayIssuer when empty
	Audience string // DefaultServicesAudience when empty
	ClientID string // DefaultGatewayClientID when empty
	// Lifetime of each token; zero, negative or above MaxAccessLifetime
	// means MaxAccessLifetime.
	Lifetime time.Duration
	Now      func() time.Time
}

// MintAccess signs a token for subject, through session sid ("" for an API
// key), carrying scopes.
func (m *AccessMinter) MintAccess(subject, sid string, scopes []string) (string, *AccessClaims, error) {
	return m.mintAccess(subject, sid, "", scopes)
}

// MintAccessForKey signs a token for subject through the API key keyID.
func (m *AccessMinter) MintAccessForKey(subject, keyID string, scopes []string) (string, *AccessClaims, error) {
	return m.mintAccess(subject, "", keyID, scopes)
}

func (m *AccessMinter) mintAccess(subject, sid, keyID string, scopes []string) (string, *AccessClaims, error) {
	if subject == "" {
		return "", nil, errors.New("mint access token: empty subject")
	}
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	lifetime := m.Lifetime
	if lifetime <= 0 || lifetime > MaxAccessLifetime {
		lifetime = MaxAccessLifetime
	}
	t := now().Truncate(time.Second)
	jti, err := newJTI()
	if err != nil {
		return "", nil, err
	}
	claims := &AccessClaims{
		Registered: Registered{
			Issuer: or(m.Issuer, DefaultGatewayIssuer), Subject: subject, Audience: or(m.Audience, DefaultServicesAudience),
			ExpiresAt: t.Add(lifetime).Unix(), IssuedAt: t.Unix(), ID: jti,
		},
		ClientID: or(m.ClientID, DefaultGatewayClientID), SessionID: sid, KeyID: keyID, Scope: strings.Join(scopes, " "),
	}
	tok, err := sign(m.Keys, TypeAccess, claims)
	if err != nil {
		return "", nil, fmt.Errorf("mint access token: %w", err)
	}
	return tok, claims, nil
}

// AccessVerifier checks internal tokens against the gateway's known keys.
// Set its fields before first use; it is safe for concurrent use after that.
type AccessVerifier struct {
	Keys     KeySource
	Issuer   string        // DefaultGatewayIssuer when empty
	Audience string        // DefaultServicesAudience when empty
	Leeway   time.Duration // DefaultLeeway when zero
	Now      func() time.Time

	parsing
}

// VerifyAccess checks an internal token as the package doc describes, with
// typ at+jwt, and requires sub and jti and a lifetime of at most
// MaxAccessLifetime. Errors wrap ErrInvalid.
func (v *AccessVerifier) VerifyAccess(token string) (*AccessClaims, error) {
	v.init(v.Keys, TypeAccess, or(v.Issuer, DefaultGatewayIssuer), or(v.Audience, DefaultServicesAudience), v.Leeway, v.Now)
	claims := &AccessClaims{}
	if err := verify(v.parser, v.keyfunc, token, claims); err != nil {
		return nil, err
	}
	if claims.Subject == "" || claims.ID == "" || claims.IssuedAt == 0 {
		return nil, &verifyError{reason: ErrMalformed, cause: errors.New("sub, jti or iat claim missing")}
	}
	if err := claims.checkLifetime(MaxAccessLifetime); err != nil {
		return nil, err
	}
	return claims, nil
}
