package tokens

import (
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	gojson "github.com/goccy/go-json"
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
	Registered
	// Job is the id of the one job the token is for.
	Job string `json:"job"`
	// Scope is space-separated, as in OAuth.
	Scope string `json:"scope"`
	// Epoch is the job's token epoch when the token was minted. The
	// progress service, which reads the job record anyway, refuses a token
	// whose epoch is below the record's: that is how one job's tokens are
	// revoked without a deny-list.
	Epoch int64 `json:"ep,omitempty"`
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
// scopes (a non-empty subset of JobScopes), valid until expires, at the
// job's first token epoch.
func (m *Minter) MintJob(jobID, subject string, scopes []string, expires time.Time) (string, *JobClaims, error) {
	return m.MintJobAt(jobID, subject, 0, scopes, expires)
}

// MintJobAt is MintJob for a job whose token epoch has been raised.
func (m *Minter) MintJobAt(jobID, subject string, epoch int64, scopes []string, expires time.Time) (string, *JobClaims, error) {
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
		Registered: Registered{
			Issuer: or(m.Issuer, DefaultAPIIssuer), Subject: subject, Audience: or(m.Audience, DefaultProgressAudience),
			ExpiresAt: expires.Unix(), NotBefore: t.Unix(), IssuedAt: t.Unix(), ID: jti,
		},
		Job: jobID, Scope: scope, Epoch: epoch,
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

// Verifier checks job tokens against a known key set. Set its fields before
// first use; it is safe for concurrent use after that.
type Verifier struct {
	Keys     KeySource
	Issuer   string        // DefaultAPIIssuer when empty
	Audience string        // DefaultProgressAudience when empty
	Leeway   time.Duration // DefaultLeeway when zero
	Now      func() time.Time
	// CacheSize bounds the verified-token cache (10 000 tokens); negative
	// turns it off.
	CacheSize int

	parsing
	cacheOnce sync.Once
	cache     *verifiedCache
}

// VerifyJob checks a job token as the package doc describes and returns its
// claims. Errors wrap ErrInvalid and one specific reason.
//
// A token that verified is remembered (by its SHA-256) until its exp, so a
// client polling or reconnecting pays the signature check once. Only
// successes are cached, and a hit still honours exp; a key retired since
// stops the cached token too, because the kid is checked again on a hit.
func (v *Verifier) VerifyJob(token string) (*JobClaims, error) {
	v.init(v.Keys, TypeJob, or(v.Issuer, DefaultAPIIssuer), or(v.Audience, DefaultProgressAudience), v.Leeway, v.Now)
	v.cacheOnce.Do(func() {
		if v.CacheSize >= 0 {
			v.cache = newVerifiedCache(cmp.Or(v.CacheSize, 10_000))
		}
	})
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	var h [32]byte
	if v.cache != nil && len(token) <= MaxTokenSize {
		h = sha256.Sum256([]byte(token))
		if c, kid := v.cache.get(h, now()); c != nil {
			if _, err := v.Keys.PublicKey(kid); err == nil {
				return c, nil
			}
		}
	}
	claims := &JobClaims{}
	kid, err := verifyKID(v.parser, v.keyfunc, token, claims)
	if err != nil {
		return nil, err
	}
	if claims.Job == "" || claims.Scope == "" {
		return nil, &verifyError{reason: ErrMalformed, cause: errors.New("job or scope claim missing")}
	}
	if v.cache != nil {
		v.cache.put(h, claims, kid, now())
	}
	return claims, nil
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

// allowedHeaders are the only JOSE header members a token may carry. An
// allow-list rather than a deny-list: jku, x5u, jwk, x5c (a token choosing
// or carrying its own key), crit (extensions we would have to understand)
// and anything invented later are all refused.
var allowedHeaders = [...]string{"alg", "typ", "kid"}

// newParser builds the golang-jwt parser every token kind shares: EdDSA
// only, exp required, iat checked, canonical base64 only (so a token has
// exactly one spelling: no variant of a real token, differing in a
// segment's unused trailing bits, verifies), plus the kind's own options.
func newParser(opts ...jwt.ParserOption) *jwt.Parser {
	return jwt.NewParser(append(opts,
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithStrictDecoding(),
	)...)
}

// keyfunc checks a token's header (golang-jwt has already checked alg) and
// finds its key by kid in keys, and nowhere else.
func keyfunc(keys KeySource, typ string) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		if h, _ := t.Header["typ"].(string); h != typ {
			return nil, ErrWrongType
		}
		for name := range t.Header {
			if name != allowedHeaders[0] && name != allowedHeaders[1] && name != allowedHeaders[2] {
				return nil, ErrForbiddenHeader
			}
		}
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, ErrUnknownKey
		}
		if keys == nil {
			return nil, ErrUnknownKey
		}
		pub, err := keys.PublicKey(kid)
		if err != nil {
			return nil, err
		}
		return pub, nil
	}
}

// verify is the common core for every token kind: size, then header, key,
// signature and registered claims via golang-jwt.
func verify(parser *jwt.Parser, kf jwt.Keyfunc, token string, claims jwt.Claims) error {
	_, err := verifyKID(parser, kf, token, claims)
	return err
}

// verifyKID is verify that also returns the kid that verified.
func verifyKID(parser *jwt.Parser, kf jwt.Keyfunc, token string, claims jwt.Claims) (string, error) {
	if len(token) > MaxTokenSize {
		return "", ErrTooLarge
	}
	t, err := parser.ParseWithClaims(token, claims, kf)
	if err != nil {
		return "", classify(err)
	}
	kid, _ := t.Header["kid"].(string)
	return kid, nil
}

// classify maps golang-jwt's errors onto this package's reasons.
func classify(err error) error {
	if errors.Is(err, ErrKeysUnavailable) {
		return ErrKeysUnavailable
	}
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

// jobClaimsFields has JobClaims' fields without its methods, so decoding
// into it does not recurse into UnmarshalJSON.
type jobClaimsFields JobClaims

// UnmarshalJSON decodes with goccy/go-json, a drop-in encoding/json
// replacement that is several times faster on small structs. golang-jwt
// still owns the parsing; this only speeds up the step where it hands us the
// claims' JSON, which is most of verification's cost beyond the signature.
func (c *JobClaims) UnmarshalJSON(data []byte) error {
	return gojson.Unmarshal(data, (*jobClaimsFields)(c))
}
