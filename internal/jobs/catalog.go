package jobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// TypeSpec is what the API needs to know about a job type: enough to validate
// and enqueue a job, nothing about how it runs. Workers pair a TypeSpec with a
// handler (see package worker).
type TypeSpec struct {
	// Name is the type's identifier in requests and in Asynq ("primes").
	Name string `json:"name"`
	// Description is one sentence for people reading GET /v1/job-types.
	Description string `json:"description"`
	// Schema is the JSON Schema (draft 2020-12) of the job's input.
	Schema json.RawMessage `json:"input_schema"`
	// Timeout is the default time one attempt may run; a request may lower
	// or raise it up to MaxTimeout.
	Timeout time.Duration `json:"-"`
	// MaxTimeout caps the timeout a request may ask for. Zero means Timeout.
	MaxTimeout time.Duration `json:"-"`
	// MaxRetry is how many times a failed attempt is retried.
	MaxRetry int `json:"max_retry"`
	// ResultType is the content type of the result, for documentation.
	ResultType string `json:"result_type"`
	// MaxResultBytes caps this type's result; zero means the worker's
	// limit (worker.Config.MaxResultBytes), and a larger value is capped by
	// it. A job whose result outgrows it fails, and is not retried.
	MaxResultBytes int64 `json:"max_result_bytes,omitempty"`
	// InputLimits bound the input before schema validation, the API's and
	// the worker's alike; zero fields take their defaults (see InputLimits).
	InputLimits InputLimits `json:"input_limits"`
	// Pool names the workers that run the type (DefaultPool when empty).
	Pool string `json:"pool"`
}

// DefaultPool is the pool of a type that names none.
const DefaultPool = "default"

// MarshalJSON adds the durations in the units clients send them in.
func (t TypeSpec) MarshalJSON() ([]byte, error) {
	type plain TypeSpec
	return json.Marshal(struct {
		plain
		Timeout    string `json:"default_timeout"`
		MaxTimeout string `json:"max_timeout"`
	}{plain(t), t.Timeout.String(), t.maxTimeout().String()})
}

func (t TypeSpec) maxTimeout() time.Duration {
	if t.MaxTimeout > 0 {
		return t.MaxTimeout
	}
	return t.Timeout
}

// Catalog holds the known job types with their compiled input schemas.
// It is safe for concurrent use once built.
type Catalog struct {
	specs   []TypeSpec
	byName  map[string]int
	schemas map[string]*jsonschema.Schema
}

// NewCatalog compiles every type's schema; a schema that does not compile is a
// programming error reported here rather than at the first request.
func NewCatalog(specs ...TypeSpec) (*Catalog, error) {
	types := make([]*Compiled, 0, len(specs))
	for _, s := range specs {
		ct, err := Compile(s)
		if err != nil {
			return nil, err
		}
		types = append(types, ct)
	}
	return CatalogOf(types...)
}

// Compiled is one type's spec with its compiled input schema, the unit a
// Catalog is made of. Compiling a schema costs far more than looking one
// up, so a catalog that changes (the api's, rebuilt as workers announce
// and leave) compiles a spec once and reuses it (CatalogOf).
type Compiled struct {
	spec   TypeSpec
	schema *jsonschema.Schema
}

// Spec returns the spec it was compiled from, input limits defaulted.
func (c *Compiled) Spec() TypeSpec { return c.spec }

// Compile checks s and compiles its schema.
func Compile(s TypeSpec) (*Compiled, error) {
	if s.Name == "" || strings.ContainsAny(s.Name, " :/") {
		return nil, fmt.Errorf("job type %q: name must be a non-empty word", s.Name)
	}
	if s.Timeout <= 0 {
		return nil, fmt.Errorf("job type %q: timeout must be positive", s.Name)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(s.Schema))
	if err != nil {
		return nil, fmt.Errorf("job type %q: schema: %w", s.Name, err)
	}
	comp := jsonschema.NewCompiler()
	// The library's default loader reads any file:// $ref from disk. A
	// schema now comes from whoever can write an announcement, and the
	// api compiles it: no $ref may leave the schema itself (the draft
	// meta-schemas are built into the library and still resolve).
	comp.UseLoader(noLoader{})
	url := "claimcheck:///types/" + s.Name + ".json" // as the library normalizes it, so local $refs resolve
	if err := comp.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("job type %q: schema: %w", s.Name, err)
	}
	sch, err := comp.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("job type %q: schema: %w", s.Name, err)
	}
	s.InputLimits = s.InputLimits.WithDefaults()
	return &Compiled{spec: s, schema: sch}, nil
}

// noLoader refuses every external schema resource.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("%s: a job type's schema may not refer to another document", url)
}

// CatalogOf builds a catalog of compiled types, which it shares (they are
// never modified); two types of one name are an error.
func CatalogOf(types ...*Compiled) (*Catalog, error) {
	c := &Catalog{byName: map[string]int{}, schemas: map[string]*jsonschema.Schema{}}
	for _, t := range types {
		if _, dup := c.byName[t.spec.Name]; dup {
			return nil, fmt.Errorf("job type %q: registered twice", t.spec.Name)
		}
		c.byName[t.spec.Name] = len(c.specs)
		c.specs = append(c.specs, t.spec)
		c.schemas[t.spec.Name] = t.schema
	}
	return c, nil
}

// Specs lists the types in registration order.
func (c *Catalog) Specs() []TypeSpec { return slices.Clone(c.specs) }

// MaxInputBytes is the largest input any type takes (InputLimits.MaxBytes),
// which bounds a job request's body.
func (c *Catalog) MaxInputBytes() int {
	n := DefaultMaxInputBytes
	if len(c.specs) > 0 {
		n = 0
	}
	for _, s := range c.specs {
		n = max(n, s.InputLimits.MaxBytes)
	}
	return n
}

// Names lists the type names, sorted, for error messages.
func (c *Catalog) Names() []string {
	names := make([]string, 0, len(c.specs))
	for _, s := range c.specs {
		names = append(names, s.Name)
	}
	slices.Sort(names)
	return names
}

// Lookup returns the spec of the named type.
func (c *Catalog) Lookup(name string) (TypeSpec, bool) {
	i, ok := c.byName[name]
	if !ok {
		return TypeSpec{}, false
	}
	return c.specs[i], true
}

// ErrUnknownType is returned for a job type the catalog does not hold.
var ErrUnknownType = errors.New("unknown job type")

// UnknownTypeError names the type asked for and the types that exist.
type UnknownTypeError struct {
	Type  string
	Known []string
}

func (e *UnknownTypeError) Error() string {
	return fmt.Sprintf("job type %q is not known; known types: %s", e.Type, strings.Join(e.Known, ", "))
}

func (e *UnknownTypeError) Unwrap() error { return ErrUnknownType }

// ErrInvalidInput is returned when a job's input breaks its type's input
// limits or schema.
var ErrInvalidInput = errors.New("invalid job input")

// InputError lists every way an input breaks its type's schema.
type InputError struct {
	Type   string
	Errors []FieldError
}

// FieldError is one schema violation, located by JSON Pointer.
type FieldError struct {
	Pointer string `json:"pointer"`
	Detail  string `json:"detail"`
}

func (e *InputError) Error() string {
	parts := make([]string, 0, len(e.Errors))
	for _, f := range e.Errors {
		parts = append(parts, f.Pointer+": "+f.Detail)
	}
	if e.Type == "" {
		return "input: " + strings.Join(parts, "; ")
	}
	return fmt.Sprintf("input for %s: %s", e.Type, strings.Join(parts, "; "))
}

func (e *InputError) Unwrap() error { return ErrInvalidInput }

// Under returns a copy of e whose pointers are prefixed with prefix, the
// input's own pointer in a larger document ("/input" in a request body).
func (e *InputError) Under(prefix string) *InputError {
	cp := &InputError{Type: e.Type, Errors: make([]FieldError, len(e.Errors))}
	for i, f := range e.Errors {
		cp.Errors[i] = FieldError{Pointer: prefix + f.Pointer, Detail: f.Detail}
	}
	return cp
}

// Validate checks input against the named type's input limits, then its
// schema. An absent input is validated as the empty object. Pointers in an
// *InputError are into the input.
//
// The limits are checked, and the document built, by this package's own
// linear pass (parseInput): the schema library never reads the text, so it
// never meets a number it cannot afford to compare.
func (c *Catalog) Validate(name string, input json.RawMessage) error {
	sch, ok := c.schemas[name]
	if !ok {
		return &UnknownTypeError{Type: name, Known: c.Names()}
	}
	if len(bytes.TrimSpace(input)) == 0 {
		input = json.RawMessage("{}")
	}
	doc, err := parseInput(input, c.specs[c.byName[name]].InputLimits)
	if err != nil {
		var ie *InputError
		if errors.As(err, &ie) {
			ie.Type = name
		}
		return err
	}
	err = sch.Validate(doc)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return fmt.Errorf("validate %s input: %w", name, err)
	}
	ie := &InputError{Type: name}
	for _, u := range ve.BasicOutput().Errors {
		if u.Error == nil || u.Error.Kind == nil {
			continue
		}
		if len(ie.Errors) == maxFieldErrors {
			break
		}
		ie.Errors = append(ie.Errors, FieldError{Pointer: u.InstanceLocation, Detail: clip(u.Error.String())})
	}
	if len(ie.Errors) == 0 {
		ie.Errors = []FieldError{{Pointer: "", Detail: clip(ve.Error())}}
	}
	return ie
}

// maxFieldErrors and maxDetailBytes bound an InputError: the library's
// messages may quote the input (a 16 KiB string against an enum), and a
// refusal must not answer with more than it was sent.
const (
	maxFieldErrors = 20
	maxDetailBytes = 256
)

// clip shortens s to maxDetailBytes, at a rune boundary.
func clip(s string) string {
	if len(s) <= maxDetailBytes {
		return s
	}
	cut := maxDetailBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// EffectiveTimeout resolves a requested per-attempt timeout against the
// type's default and cap.
func (t TypeSpec) EffectiveTimeout(requested time.Duration) (time.Duration, error) {
	switch {
	case requested == 0:
		return t.Timeout, nil
	case requested < 0:
		return 0, fmt.Errorf("timeout %s: must be positive", requested)
	case requested > t.maxTimeout():
		return 0, fmt.Errorf("timeout %s: %s allows at most %s", requested, t.Name, t.maxTimeout())
	}
	return requested, nil
}
