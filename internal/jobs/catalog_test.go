package jobs_test

import (
	"encoding/json"
	"errors"
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
