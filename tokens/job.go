package tokens

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TypeJob is the typ header of a job token.
const TypeJob = "job+jwt"

// Job token scopes.
const (
	ScopeJobRead   = "job:read"
	ScopeJobCancel = "job:cancel"
	ScopeJobResult = "job:result"
)

// JobScopes is the full scope of a freshly minted job token.
var JobScopes = []string{ScopeJobRead, ScopeJobCancel, ScopeJobResult}

// Defaults for issuer, audience, leeway and size.
const (
	DefaultAPIIssuer        = "urn:claimcheck:api"
	DefaultProgressAudience = "urn:claimcheck:progress"
	DefaultLeeway           = 30 * time.Second
	MaxTokenSize            = 4096
)

// JobClaims are a job token's claims.
type JobClaims struct {
	jwt.RegisteredClaims
	// Job is the id of the one job the token is for.
	Job string `json:"job"`
	// Scope is space-separated, as in OAuth.
	Scope string `json:"scope"`
}

// Scopes splits Scope.
func (c *JobClaims) Scopes() []string { return strings.Fields(c.Scope) }

// Authorize checks that the token is for jobID and carries scope.
func (c *JobClaims) Authorize(jobID, scope string) error {
	if c.Job != jobID {
		return ErrWrongJob
	}
	have := c.Scopes()
	if !slices.Contains(have, scope) {
		return &ScopeError{Need: scope, Have: have}
	}
	return nil
}

// Minter signs job tokens with a key set's active key.
type Minter struct {
	Keys     *KeySet
	Issuer   string           // DefaultAPIIssuer when empty
	Audience string           // DefaultProgressAudience when empty
	Now      func() time.Time // time.Now when nil
}

// MintJob signs a job token for jobID, owned by subject, with the given
// scopes (a non-empty subset of JobScopes), valid until expires.
func (m *Minter) MintJob(jobID, subject string, scopes []string, expires time.Time) (string, *JobClaims, error) {
	if jobID == "" {
		return "", nil, errors.New("mint job token: empty job id")
	}
	scope, err := jobScope(scopes)
	if err != nil {
		return "", nil, err
	}
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	t := now().Truncate(time.Second)
	if !expires.After(t) {
		return "", nil, fmt.Errorf("mint job token: expiry %v is not after now", expires)
	}
	jti, err := newJTI()
	if err != nil {
		return "", nil, err
	}
	claims := &JobClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    or(m.Issuer, DefaultAPIIssuer),
			Subject:   subject,
			Audience:  jwt.ClaimStrings{or(m.Audience, DefaultProgressAudience)},
			ExpiresAt: jwt.NewNumericDate(expires),
			NotBefore: jwt.NewNumericDate(t),
			IssuedAt:  jwt.NewNumericDate(t),
			ID:        jti,
		},
		Job:   jobID,
		Scope: scope,
	}
	tok, err := sign(m.Keys, TypeJob, claims)
	if err != nil {
		return "", nil, fmt.Errorf("mint job token: %w", err)
	}
	return tok, claims, nil
}

func jobScope(scopes []string) (string, error) {
	var out []string
	for _, s := range scopes {
		if !slices.Contains(JobScopes, s) {
			return "", fmt.Errorf("mint job token: unknown scope %q", s)
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return "", errors.New("mint job token: no scope")
	}
	return strings.Join(out, " "), nil
}

// Verifier checks job tokens against a known key set.
type Verifier struct {
	Keys     KeySource
	Issuer   string        // DefaultAPIIssuer when empty
	Audience string        // DefaultProgressAudience when empty
	Leeway   time.Duration // DefaultLeeway when zero
	Now      func() time.Time
}

// VerifyJob checks a job token as the package doc describes and returns its
// claims. Errors wrap ErrInvalid and one specific reason.
func (v *Verifier) VerifyJob(token string) (*JobClaims, error) {
	claims := &JobClaims{}
	if err := verify(v.Keys, TypeJob, token, claims, v.options()...); err != nil {
		return nil, err
	}
	if claims.Job == "" || claims.Scope == "" {
		return nil, &verifyError{reason: ErrMalformed, cause: errors.New("job or scope claim missing")}
	}
	return claims, nil
}

func (v *Verifier) options() []jwt.ParserOption {
	leeway := v.Leeway
	if leeway == 0 {
		leeway = DefaultLeeway
	}
	opts := []jwt.ParserOption{
		jwt.WithIssuer(or(v.Issuer, DefaultAPIIssuer)),
		jwt.WithAudience(or(v.Audience, DefaultProgressAudience)),
		jwt.WithLeeway(leeway),
	}
	if v.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(v.Now))
	}
	return opts
}

// sign makes a compact JWS of claims with the set's active key.
func sign(keys *KeySet, typ string, claims jwt.Claims) (string, error) {
	if keys == nil {
		return "", errors.New("no key set")
	}
	k, err := keys.Signer()
	if err != nil {
		return "", err
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	t.Header["typ"] = typ
	t.Header["kid"] = k.ID
	return t.SignedString(k.Private)
}

// forbiddenHeaders would let a token choose or carry its own key.
var forbiddenHeaders = []string{"jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"}

// verify is the common core for every token kind: size, header, key by kid
// from the known set, signature and registered claims, via golang-jwt.
func verify(keys KeySource, typ, token string, claims jwt.Claims, opts ...jwt.ParserOption) error {
	if len(token) > MaxTokenSize {
		return ErrTooLarge
	}
	if keys == nil {
		return errors.New("verifier has no keys")
	}
	opts = append(opts,
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	)
	_, err := jwt.NewParser(opts...).ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		if h, _ := t.Header["typ"].(string); h != typ {
			return nil, ErrWrongType
		}
		for _, h := range forbiddenHeaders {
			if _, ok := t.Header[h]; ok {
				return nil, ErrForbiddenHeader
			}
		}
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, ErrUnknownKey
		}
		pub, err := keys.PublicKey(kid)
		if err != nil {
			return nil, err
		}
		return ed25519.PublicKey(pub), nil
	})
	if err == nil {
		return nil
	}
	return classify(err)
}

// classify maps golang-jwt's errors onto this package's reasons.
func classify(err error) error {
	for _, reason := range []error{ErrWrongType, ErrForbiddenHeader, ErrUnknownKey} {
		if errors.Is(err, reason) {
			return &verifyError{reason: reason, cause: err}
		}
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return &verifyError{reason: ErrMalformed, cause: err}
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return &verifyError{reason: ErrSignature, cause: err}
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return &verifyError{reason: ErrMalformed, cause: err}
	case errors.Is(err, jwt.ErrTokenExpired):
		return &verifyError{reason: ErrExpired, cause: err}
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return &verifyError{reason: ErrNotYetValid, cause: err}
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return &verifyError{reason: ErrWrongIssuer, cause: err}
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return &verifyError{reason: ErrWrongAudience, cause: err}
	}
	return &verifyError{reason: ErrMalformed, cause: err}
}

func newJTI() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("jti: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
