package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

// announced is a type's spec as it is stored in Redis. It has its own
// shape, durations as Go duration strings, so that what a worker writes
// does not depend on how the api renders a spec in GET /v1/job-types.
type announced struct {
	Name           string           `json:"name"`
	Description    string           `json:"description"`
	InputSchema    json.RawMessage  `json:"input_schema"`
	ContentType    string           `json:"content_type"`
	Timeout        string           `json:"timeout"`
	MaxTimeout     string           `json:"max_timeout"`
	MaxRetry       int              `json:"max_retry"`
	MaxResultBytes int64            `json:"max_result_bytes"`
	InputLimits    jobs.InputLimits `json:"input_limits"`
	Pool           string           `json:"pool"`
}

// typeName is what a type may be called: it ends up in Redis key names and
// Asynq task types, so it is kept to a plain word.
var typeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// encode turns s into its canonical JSON and the digest of that: the
// schema is re-encoded with sorted keys and no insignificant space, and
// limits and pool take their defaults, so that two workers with the same
// type give the same digest however their schema text was spelled.
func encode(s jobs.TypeSpec) (text []byte, digest string, err error) {
	if !typeName.MatchString(s.Name) {
		return nil, "", fmt.Errorf("job type %q: name must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", s.Name)
	}
	pool := s.Pool
	if pool == "" {
		pool = jobs.DefaultPool
	}
	if err := jobs.ValidPool(pool); err != nil {
		return nil, "", fmt.Errorf("job type %q: %w", s.Name, err)
	}
	schema := s.Schema
	if len(bytes.TrimSpace(schema)) == 0 {
		schema = json.RawMessage(`{"type":"object"}`)
	}
	dec := json.NewDecoder(bytes.NewReader(schema))
	dec.UseNumber() // numbers keep their exact text
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, "", fmt.Errorf("job type %q: schema: %w", s.Name, err)
	}
	canon, err := json.Marshal(doc) // maps marshal with sorted keys
	if err != nil {
		return nil, "", fmt.Errorf("job type %q: schema: %w", s.Name, err)
	}
	maxTimeout := s.MaxTimeout
	if maxTimeout <= 0 {
		maxTimeout = s.Timeout
	}
	text, err = json.Marshal(announced{
		Name: s.Name, Description: s.Description, InputSchema: canon, ContentType: s.ResultType,
		Timeout: s.Timeout.String(), MaxTimeout: maxTimeout.String(), MaxRetry: s.MaxRetry,
		MaxResultBytes: s.MaxResultBytes, InputLimits: s.InputLimits.WithDefaults(), Pool: pool,
	})
	if err != nil {
		return nil, "", err
	}
	if len(text) > MaxSpecBytes {
		return nil, "", fmt.Errorf("job type %q: spec is %d bytes, over the %d-byte limit (the schema is most of it)", s.Name, len(text), MaxSpecBytes)
	}
	return text, digestOf(text), nil
}

// MaxSpecBytes caps one announced spec's canonical JSON: every api reads
// and compiles it, and a schema past this size is a mistake.
const MaxSpecBytes = 256 << 10

// digestOf is the digest of a spec's canonical JSON.
func digestOf(text []byte) string {
	sum := sha256.Sum256(text)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Digest is the digest of s's canonical spec, what workers compare to
// decide whether they announce the same type (and what a result receipt
// may name).
func Digest(s jobs.TypeSpec) (string, error) {
	_, d, err := encode(s)
	return d, err
}

// decode reads a spec as announced.
func decode(text []byte) (jobs.TypeSpec, error) {
	var a announced
	if err := json.Unmarshal(text, &a); err != nil {
		return jobs.TypeSpec{}, fmt.Errorf("announced spec: %w", err)
	}
	timeout, err := time.ParseDuration(a.Timeout)
	if err != nil {
		return jobs.TypeSpec{}, fmt.Errorf("announced spec %q: timeout: %w", a.Name, err)
	}
	maxTimeout, err := time.ParseDuration(a.MaxTimeout)
	if err != nil {
		return jobs.TypeSpec{}, fmt.Errorf("announced spec %q: max_timeout: %w", a.Name, err)
	}
	return jobs.TypeSpec{
		Name: a.Name, Description: a.Description, Schema: a.InputSchema, Timeout: timeout, MaxTimeout: maxTimeout,
		MaxRetry: a.MaxRetry, ResultType: a.ContentType, MaxResultBytes: a.MaxResultBytes,
		InputLimits: a.InputLimits, Pool: a.Pool,
	}, nil
}
