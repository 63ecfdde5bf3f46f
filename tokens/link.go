package tokens

import (
	"errors"
	"fmt"
	"time"

	gojson "github.com/goccy/go-json"
)

// TypeLink is the typ header of a download link token.
const TypeLink = "link+jwt"

// ScopeResultDownload is a link's only scope.
const ScopeResultDownload = "result:download"

// Defaults for download links.
const (
	DefaultProgressIssuer  = "urn:claimcheck:progress"
	DefaultResultsAudience = "urn:claimcheck:progress:results"
	DefaultLinkLifetime    = 10 * time.Minute
	// MaxLinkLifetime caps a link's life: a URL travels (chat, logs,
	// browser history) further than a token in a header.
	MaxLinkLifetime = 24 * time.Hour
)

// LinkClaims are a download link's claims: one job's result, once
// downloadable by whoever holds the URL, until exp. The progress service
// mints them with its own key, so the api cannot make links and a link is
// never a job token (typ, issuer and audience all differ).
type LinkClaims struct {
	Registered
	Job   string `json:"job"`
	Scope string `json:"scope"`
	// Epoch is the job's token epoch: revoking the job's tokens revokes
	// its links too.
	Epoch int64 `json:"ep,omitempty"`
	// Filename and Disposition shape Content-Disposition.
	Filename    string `json:"fn,omitempty"`
	Disposition string `json:"disp,omitempty"`
	// Once marks a one-time link: the progress service serves each byte
	// of the result at most once through it, keeping the link's state in
	// the job's Redis slot under its jti (see package progress). The
	// signature alone cannot say a link was used; the claim only tells
	// the service to look.
	Once bool `json:"once,omitempty"`
}

type linkClaimsFields LinkClaims

// UnmarshalJSON decodes with goccy/go-json, as JobClaims does.
func (c *LinkClaims) UnmarshalJSON(data []byte) error {
	return gojson.Unmarshal(data, (*linkClaimsFields)(c))
}

// LinkMinter signs download links with the progress service's own keys.
type LinkMinter struct {
	Keys     *KeySet
	Issuer   string // DefaultProgressIssuer when empty
	Audience string // DefaultResultsAudience when empty
	Now      func() time.Time
}

// LinkOptions shape a link that Mint signs; every field is optional.
type LinkOptions struct {
	// Filename and Disposition become the fn and disp claims.
	Filename, Disposition string
	// TTL is the link's lifetime (DefaultLinkLifetime when zero; at most
	// MaxLinkLifetime).
	TTL time.Duration
	// NotAfter, when set, bounds exp (the exp of the token asking for the
	// link, or its record's expiry): exp is the earlier of now+TTL and
	// NotAfter, rounded down to the second, and one that leaves no whole
	// second is ErrExpired.
	NotAfter time.Time
	// Once makes a one-time link (LinkClaims.Once).
	Once bool
}

// MintLink signs a link to job jobID's result at token epoch epoch, valid
// for ttl (DefaultLinkLifetime when zero; at most MaxLinkLifetime).
func (m *LinkMinter) MintLink(jobID string, epoch int64, filename, disposition string, ttl time.Duration) (string, *LinkClaims, error) {
	return m.Mint(jobID, epoch, LinkOptions{Filename: filename, Disposition: disposition, TTL: ttl})
}

// MintLinkUntil is MintLink for a link that must not outlive notAfter
// (LinkOptions.NotAfter).
func (m *LinkMinter) MintLinkUntil(jobID string, epoch int64, filename, disposition string, ttl time.Duration, notAfter time.Time) (string, *LinkClaims, error) {
	return m.Mint(jobID, epoch, LinkOptions{Filename: filename, Disposition: disposition, TTL: ttl, NotAfter: notAfter})
}

// Mint signs a link to job jobID's result at token epoch epoch, shaped by o.
func (m *LinkMinter) Mint(jobID string, epoch int64, o LinkOptions) (string, *LinkClaims, error) {
	ttl, notAfter := o.TTL, o.NotAfter
	if jobID == "" {
		return "", nil, errors.New("mint link: empty job id")
	}
	if ttl <= 0 {
		ttl = DefaultLinkLifetime
	}
	if ttl > MaxLinkLifetime {
		return "", nil, fmt.Errorf("mint link: lifetime over %v", MaxLinkLifetime)
	}
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	t := now().Truncate(time.Second)
	jti, err := newJTI()
	if err != nil {
		return "", nil, err
	}
	exp := t.Add(ttl).Unix()
	if !notAfter.IsZero() {
		if exp = min(exp, notAfter.Unix()); exp <= t.Unix() {
			return "", nil, fmt.Errorf("mint link: %w: its lifetime would end before it starts", ErrExpired)
		}
	}
	c := &LinkClaims{
		Registered: Registered{
			Issuer: or(m.Issuer, DefaultProgressIssuer), Audience: or(m.Audience, DefaultResultsAudience),
			ExpiresAt: exp, IssuedAt: t.Unix(), ID: jti,
		},
		Job: jobID, Scope: ScopeResultDownload, Epoch: epoch, Filename: o.Filename, Disposition: o.Disposition, Once: o.Once,
	}
	tok, err := sign(m.Keys, TypeLink, c)
	if err != nil {
		return "", nil, fmt.Errorf("mint link: %w", err)
	}
	return tok, c, nil
}

// LinkVerifier checks download links. Set its fields before first use.
type LinkVerifier struct {
	Keys     KeySource
	Issuer   string
	Audience string
	Leeway   time.Duration
	Now      func() time.Time
	// MaxLifetime, when set, bounds exp-iat below MaxLinkLifetime: for a
	// minter that only ever makes short links (the webhook deliverer's),
	// so that its key, if stolen, signs nothing longer-lived than them.
	MaxLifetime time.Duration

	parsing
}

// VerifyLink checks a link token (typ link+jwt, the progress issuer and
// results audience, exp required, lifetime at most MaxLinkLifetime (or
// MaxLifetime), scope result:download, a jti on a one-time link). Errors
// wrap ErrInvalid.
func (v *LinkVerifier) VerifyLink(token string) (*LinkClaims, error) {
	v.init(v.Keys, TypeLink, or(v.Issuer, DefaultProgressIssuer), or(v.Audience, DefaultResultsAudience), v.Leeway, v.Now)
	c := &LinkClaims{}
	if err := verify(v.parser, v.keyfunc, token, c); err != nil {
		return nil, err
	}
	if c.Job == "" || c.Scope != ScopeResultDownload || c.IssuedAt == 0 {
		return nil, &verifyError{reason: ErrMalformed, cause: errors.New("job, scope or iat claim missing")}
	}
	limit := MaxLinkLifetime
	if v.MaxLifetime > 0 {
		limit = min(limit, v.MaxLifetime)
	}
	if err := c.checkLifetime(limit); err != nil {
		return nil, err
	}
	// A one-time link's state is kept under its jti: without one it
	// would share nothing with itself and could be used again.
	if c.Once && c.ID == "" {
		return nil, &verifyError{reason: ErrMalformed, cause: errors.New("one-time link without a jti")}
	}
	return c, nil
}
