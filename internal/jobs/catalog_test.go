package jobs_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/jobs"
)

func TestCatalogValidate(t *testing.T) {
	c, err := jobs.NewCatalog(jobs.TypeSpec{
		Name: "echo", Timeout: time.Minute, MaxTimeout: time.Hour,
		Schema: json.RawMessage(`{"type":"object","additionalProperties":false,"properties":{"n":{"type":"integer","minimum":1}},"required":["n"]}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, typ, input string
		want             error
	}{
		{"ok", "echo", `{"n":3}`, nil},
		{"unknown type", "nope", `{}`, jobs.ErrUnknownType},
		{"missing field", "echo", `{}`, jobs.ErrInvalidInput},
		{"unknown field", "echo", `{"n":1,"x":2}`, jobs.ErrInvalidInput},
		{"out of range", "echo", `{"n":0}`, jobs.ErrInvalidInput},
		{"wrong type", "echo", `{"n":"3"}`, jobs.ErrInvalidInput},
		{"not an object", "echo", `[1]`, jobs.ErrInvalidInput},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Validate(tc.typ, json.RawMessage(tc.input))
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
			var ie *jobs.InputError
			if errors.As(err, &ie) && (len(ie.Errors) == 0 || ie.Errors[0].Detail == "") {
				t.Fatalf("input error without details: %+v", ie)
			}
			var ue *jobs.UnknownTypeError
			if errors.As(err, &ue) && (len(ue.Known) != 1 || ue.Known[0] != "echo") {
				t.Fatalf("unknown type error lists %v", ue.Known)
			}
		})
	}
	spec, _ := c.Lookup("echo")
	for _, tc := range []struct {
		req  time.Duration
		want time.Duration
		ok   bool
	}{{0, time.Minute, true}, {time.Second, time.Second, true}, {2 * time.Hour, 0, false}, {-time.Second, 0, false}} {
		got, err := spec.EffectiveTimeout(tc.req)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("EffectiveTimeout(%v) = %v, %v", tc.req, got, err)
		}
	}
}

func TestCatalogRejectsBadSpecs(t *testing.T) {
	good := json.RawMessage(`{"type":"object"}`)
	for _, tc := range []struct {
		name  string
		specs []jobs.TypeSpec
	}{
		{"bad schema", []jobs.TypeSpec{{Name: "a", Timeout: time.Second, Schema: json.RawMessage(`{"type":12}`)}}},
		{"no timeout", []jobs.TypeSpec{{Name: "a", Schema: good}}},
		{"duplicate", []jobs.TypeSpec{{Name: "a", Timeout: time.Second, Schema: good}, {Name: "a", Timeout: time.Second, Schema: good}}},
		{"bad name", []jobs.TypeSpec{{Name: "a b", Timeout: time.Second, Schema: good}}},
	} {
		if _, err := jobs.NewCatalog(tc.specs...); err == nil {
			t.Errorf("%s: NewCatalog accepted it", tc.name)
		}
	}
}

// TestInputLimitsBeforeSchema checks the pass that runs before the schema:
// what it refuses, where it points, and that ordinary JSON passes it,
// numbers at float64's edges included.
func TestInputLimitsBeforeSchema(t *testing.T) {
	c, err := jobs.NewCatalog(jobs.TypeSpec{
		Name: "any", Timeout: time.Minute, Schema: json.RawMessage(`{"type":"object"}`),
		InputLimits: jobs.InputLimits{MaxDepth: 3, MaxValues: 8, MaxStringBytes: 5, MaxBytes: 100},
	})
	if err != nil {
		t.Fatal(err)
	}
	if spec, _ := c.Lookup("any"); spec.InputLimits != (jobs.InputLimits{MaxBytes: 100, MaxDepth: 3, MaxValues: 8, MaxStringBytes: 5, MaxNumberLength: 24}) {
		t.Fatalf("limits with defaults: %+v", spec.InputLimits)
	}
	for _, in := range []string{
		`{"a":1e308,"b":-1.7976931348623157e308,"c":4.9e-324,"d":-0,"e":0.0e-400}`,
		`{"f":1e0000000000000000001}`,
		`{"a":1E+2,"b":[[1]],"c":null,"d":"12345"}`,
		`{"a~/b":true}`,
	} {
		if err := c.Validate("any", json.RawMessage(in)); err != nil {
			t.Errorf("%s: %v", in, err)
		}
	}
	for _, tc := range []struct{ in, pointer string }{
		{`{"a":1e401}`, "/a"},
		{`{"a":1e400}`, "/a"},
		{`{"a":[1e-400]}`, "/a/0"},
		{`{"a":0e401}`, "/a"},
		{`{"a":1234567890123456789012345}`, "/a"},
		{`{"a":{"b":[[]]}}`, "/a/b/0"},
		{`{"a":[1,2,3,4,5,6,7]}`, "/a/6"},
		{`{"a~/b":"123456"}`, "/a~0~1b"},
		{`{"123456":1}`, "/123456"},
		{`{"a":1,"a":1}`, "/a"},
		{`{"a":[1,}`, "/a/1"},
		{`{"a":1} {}`, ""},
		{`{"a":"` + strings.Repeat("x", 100) + `"}`, ""},
	} {
		err := c.Validate("any", json.RawMessage(tc.in))
		var ie *jobs.InputError
		if !errors.As(err, &ie) || ie.Type != "any" || len(ie.Errors) != 1 || ie.Errors[0].Pointer != tc.pointer {
			t.Errorf("%.40s: %v, want one error at %q", tc.in, err, tc.pointer)
		}
	}
	if err := jobs.CheckInput(json.RawMessage(`[`+strings.Repeat("1,", 1024)+`1]`), jobs.InputLimits{}); err == nil {
		t.Error("CheckInput with default limits took 1025 values")
	}
}

// TestSchemaMayNotLoadFiles: a schema is compiled by the api from an
// announcement in Redis; a $ref to a file (a FIFO would hang the compiler,
// a large file fill its memory) or another URL is refused, not read.
func TestSchemaMayNotLoadFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "other.json")
	if err := os.WriteFile(path, []byte(`{"type":"string"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"file://" + path, "http://127.0.0.1:1/x.json"} {
		_, err := jobs.Compile(jobs.TypeSpec{Name: "t", Timeout: time.Minute, Schema: json.RawMessage(`{"$ref":"` + ref + `"}`)})
		if err == nil || !strings.Contains(err.Error(), "may not refer to another document") {
			t.Errorf("$ref %s: %v", ref, err)
		}
	}
	// The draft's own meta-schema and local refs still resolve.
	if _, err := jobs.Compile(jobs.TypeSpec{Name: "t", Timeout: time.Minute, Schema: json.RawMessage(
		`{"$schema":"https://json-schema.org/draft/2020-12/schema","$defs":{"n":{"type":"integer"}},"properties":{"n":{"$ref":"#/$defs/n"}}}`)}); err != nil {
		t.Fatal(err)
	}
}
