package tokens

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	gojson "github.com/goccy/go-json"
)

// TypeReceipt is the typ header of a result receipt.
const TypeReceipt = "receipt+jwt"

// Defaults for result receipts.
const (
	// DefaultWorkersIssuer is the worker fleet, which alone holds the
	// receipt keys (KindReceipt).
	DefaultWorkersIssuer = "urn:claimcheck:workers"
	// DefaultReceiptAudience is anyone who checks a receipt: a receipt is
	// shown to third parties, so its audience names the kind of
	// statement, not one service.
	DefaultReceiptAudience = "urn:claimcheck:receipts"
	// ReceiptLifetime is how long a receipt verifies: about ten years
	// (3650 days). A receipt's point is to outlive the result and its
	// record (kept for the retention, a day by default), for as long as
	// its holder keeps it; but verification requires exp (RFC 8725
	// §3.10, and every token kind here), so exp is set far enough out
	// that no holder meets it in practice, and bounded so that a stolen
	// receipt key does not sign statements that verify forever. The
	// key, not exp, is what ends trust early: retire it (see the package
	// doc on rotation).
	ReceiptLifetime = 3650 * 24 * time.Hour
)

// ReceiptResult is what a receipt says of the result: the bytes the
// progress service serves at GET /v1/jobs/{id}/result. A job that made no
// result has size 0, the SHA-256 of no bytes and an empty content type.
type ReceiptResult struct {
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	ContentType string `json:"content_type"`
}

// ReceiptClaims are a result receipt's claims: the worker fleet's signed
// statement that job Job, of type Type whose spec had digest Spec, given
// the input whose SHA-256 is InputSHA256, succeeded on attempt Attempts
// on worker Worker between StartedAt and FinishedAt with Result.
//
// StartedAt and FinishedAt are RFC 3339 in UTC with millisecond
// precision, the precision of the job record: FinishedAt is exactly the
// record's finished_at; StartedAt is when the successful attempt began,
// by its worker's clock (the record's started_at is the first attempt's).
type ReceiptClaims struct {
	Registered
	Job         string        `json:"job"`
	Type        string        `json:"type"`
	Spec        string        `json:"spec"`
	InputSHA256 string        `json:"input_sha256"`
	Result      ReceiptResult `json:"result"`
	StartedAt   string        `json:"started_at"`
	FinishedAt  string        `json:"finished_at"`
	Attempts    int           `json:"attempts"`
	Worker      string        `json:"worker"`
}

type receiptClaimsFields ReceiptClaims

// UnmarshalJSON decodes with goccy/go-json, as JobClaims does.
func (c *ReceiptClaims) UnmarshalJSON(data []byte) error {
	return gojson.Unmarshal(data, (*receiptClaimsFields)(c))
}

// Started is StartedAt as a time (zero if it does not parse).
func (c *ReceiptClaims) Started() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, c.StartedAt)
	return t
}

// Finished is FinishedAt as a time (zero if it does not parse).
func (c *ReceiptClaims) Finished() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, c.FinishedAt)
	return t
}

// ReceiptFacts are what a worker states in a receipt; the minter adds the
// registered claims.
type ReceiptFacts struct {
	Job, Type, Spec string
	// InputSHA256 is the hex SHA-256 of the input bytes the handler got.
	InputSHA256 string
	Result      ReceiptResult
	// StartedAt and FinishedAt are the successful attempt's; they are
	// kept to the millisecond.
	StartedAt, FinishedAt time.Time
	// Attempts is the number of the attempt that succeeded (from 1).
	Attempts int
	// Worker is the worker's id, as it announces itself in the registry.
	Worker string
}

// ReceiptTime formats t as receipts carry it: RFC 3339, UTC, to the
// millisecond.
func ReceiptTime(t time.Time) string {
	return t.UTC().Truncate(time.Millisecond).Format(time.RFC3339Nano)
}

// ReceiptMinter signs result receipts with the worker fleet's keys.
type ReceiptMinter struct {
	Keys     *KeySet
	Issuer   string // DefaultWorkersIssuer when empty
	Audience string // DefaultReceiptAudience when empty
	Now      func() time.Time
}

// MintReceipt signs a receipt stating f, valid for ReceiptLifetime.
func (m *ReceiptMinter) MintReceipt(f ReceiptFacts) (string, *ReceiptClaims, error) {
	c := &ReceiptClaims{
		Job: f.Job, Type: f.Type, Spec: f.Spec, InputSHA256: f.InputSHA256, Result: f.Result,
		StartedAt: ReceiptTime(f.StartedAt), FinishedAt: ReceiptTime(f.FinishedAt), Attempts: f.Attempts, Worker: f.Worker,
	}
	if err := c.check(); err != nil {
		return "", nil, fmt.Errorf("mint receipt: %w", err)
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
	c.Registered = Registered{
		Issuer: or(m.Issuer, DefaultWorkersIssuer), Audience: or(m.Audience, DefaultReceiptAudience),
		ExpiresAt: t.Add(ReceiptLifetime).Unix(), IssuedAt: t.Unix(), ID: jti,
	}
	tok, err := sign(m.Keys, TypeReceipt, c)
	if err != nil {
		return "", nil, fmt.Errorf("mint receipt: %w", err)
	}
	return tok, c, nil
}

// check insists on every claim a receipt states, well formed.
func (c *ReceiptClaims) check() error {
	switch {
	case c.Job == "" || c.Type == "" || c.Spec == "" || c.Worker == "":
		return errors.New("job, type, spec or worker claim missing")
	case !isSHA256Hex(c.InputSHA256):
		return errors.New("input_sha256 is not a hex SHA-256")
	case !isSHA256Hex(c.Result.SHA256):
		return errors.New("result.sha256 is not a hex SHA-256")
	case c.Result.Size < 0:
		return errors.New("result.size is negative")
	case c.Attempts < 1:
		return errors.New("attempts below 1")
	}
	started, err := time.Parse(time.RFC3339Nano, c.StartedAt)
	if err != nil {
		return errors.New("started_at is not RFC 3339")
	}
	finished, err := time.Parse(time.RFC3339Nano, c.FinishedAt)
	if err != nil {
		return errors.New("finished_at is not RFC 3339")
	}
	if finished.Before(started) {
		return errors.New("finished_at is before started_at")
	}
	return nil
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	// Lowercase only: one spelling per digest keeps comparisons plain.
	return err == nil && s == strings.ToLower(s)
}

// ReceiptVerifier checks result receipts against the worker fleet's
// public keys (keys of KindReceipt only: ParseJWKSOf, NewRemoteKeysOf).
// Set its fields before first use.
type ReceiptVerifier struct {
	Keys     KeySource
	Issuer   string // DefaultWorkersIssuer when empty
	Audience string // DefaultReceiptAudience when empty
	Leeway   time.Duration
	Now      func() time.Time

	parsing
}

// VerifyReceipt checks a receipt as the package doc describes (typ
// receipt+jwt, the workers' issuer, the receipts audience, exp required,
// lifetime at most ReceiptLifetime) and that every claim it states is
// present and well formed. Errors wrap ErrInvalid.
func (v *ReceiptVerifier) VerifyReceipt(token string) (*ReceiptClaims, error) {
	v.init(v.Keys, TypeReceipt, or(v.Issuer, DefaultWorkersIssuer), or(v.Audience, DefaultReceiptAudience), v.Leeway, v.Now)
	c := &ReceiptClaims{}
	if err := verify(v.parser, v.keyfunc, token, c); err != nil {
		return nil, err
	}
	if c.IssuedAt == 0 || c.ID == "" {
		return nil, &verifyError{reason: ErrMalformed, cause: errors.New("iat or jti claim missing")}
	}
	if err := c.check(); err != nil {
		return nil, &verifyError{reason: ErrMalformed, cause: err}
	}
	if err := c.checkLifetime(ReceiptLifetime); err != nil {
		return nil, err
	}
	return c, nil
}

// ParseReceiptJWKS reads the receipt keys of a JWKS document (the api's
// /.well-known/jwks.json): only keys tagged kind "receipt". Unlike
// ParseJWKSOf it does not take an untagged key for one: receipt keys were
// tagged from the start, so an untagged key is another process's (or a
// document's from before kinds) and must never verify a receipt.
func ParseReceiptJWKS(data []byte) (*KeySet, error) {
	if len(data) > maxJWKSSize {
		return nil, fmt.Errorf("jwks: document over %d bytes", maxJWKSSize)
	}
	var doc JWKS
	if err := gojson.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	tagged := JWKS{Keys: []JWK{}}
	for _, k := range doc.Keys {
		if k.Kind == KindReceipt {
			tagged.Keys = append(tagged.Keys, k)
		}
	}
	only, err := gojson.Marshal(tagged)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	return parseJWKS(only, KindReceipt)
}
