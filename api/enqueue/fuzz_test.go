package enqueue_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/webhook"
)

// fuzzSchemas are the fixture's types' schemas, compiled here on their own
// so an accepted input is checked by the library directly, not through the
// code under test.
var fuzzSchemas = map[string]string{
	"echo":  `{"type":"object","additionalProperties":false,"properties":{"n":{"type":"integer","minimum":0}}}`,
	"sleep": `{"type":"object","additionalProperties":false,"properties":{"seconds":{"type":"number","minimum":0,"maximum":3600},"tags":{"type":"array"},"note":{"type":"string"}}}`,
}

// FuzzJobRequest posts arbitrary bodies to POST /v1/jobs (decoding, input
// limits, schema validation; issue 10, finding 3). Whatever the body: no
// panic and no 5xx; every refusal is problem+json, 400, 413 or 422, and a 422
// for the input points into it (/input…); every 202's input is within the
// default input limits and valid under its type's schema as the library
// itself judges it, and every 202's webhook passes webhook.Guard (with a DNS
// that never answers, only public literals and hosts-file names can). A 422
// about the webhook points into it (/webhook/…). Plain `go test` runs the seeds here and in
// testdata/fuzz/FuzzJobRequest; explore further with
//
//	go test -run '^$' -fuzz FuzzJobRequest -fuzztime 60s -parallel 1 ./api/enqueue/
//
// (each accepted body is a job in the package's Redis, so keep runs short).
func FuzzJobRequest(f *testing.F) {
	fx := newFixtureWith(f, redistest.Client(f), nil, false, withWebhooks(&webhook.Guard{Resolver: stalledDNS}))
	schemas := map[string]*jsonschema.Schema{}
	for name, text := range fuzzSchemas {
		doc, err := jsonschema.UnmarshalJSON(strings.NewReader(text))
		if err != nil {
			f.Fatal(err)
		}
		c := jsonschema.NewCompiler()
		if err := c.AddResource(name+".json", doc); err != nil {
			f.Fatal(err)
		}
		if schemas[name], err = c.Compile(name + ".json"); err != nil {
			f.Fatal(err)
		}
	}
	for _, seed := range []string{
		`{"type":"echo","input":{"n":1}}`,
		`{"type":"sleep","input":{"seconds":1.5,"tags":[1,"a",{"b":null}],"note":"x"}}`,
		`{"type":"sleep"}`,
		`{"type":"sleep","input":{"seconds":1e1000001}}`,
		`{"type":"echo","input":{"n":1e400}}`,
		`{"type":"sleep","input":{"seconds":-0.0e-400}}`,
		`{"type":"sleep","input":{"seconds":1,"seconds":2}}`,
		`{"type":"sleep","input":{"tags":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}`,
		`{"type":"sleep","input":{"a~/b":1}}`,
		`{"type":"echo","input":{"n":1},"priority":"urgent"}`,
		`{"type":"echo","input":[1]} {}`,
		`{"type":"nope"}`,
		`{"type":"echo","input":"\ud800"}`,
		`{"type":"echo","webhook":{"url":"https://93.184.215.14/h","events":["log","log"]}}`,
		`{"type":"echo","webhook":{"url":"http://[::ffff:7f00:1]/"}}`,
		`{"type":"echo","webhook":{"url":"http://[64:ff9b::a9fe:a9fe]/"}}`,
		`{"type":"echo","webhook":{"url":"http://0x7f.1/"}}`,
		`{"type":"echo","webhook":{"url":"http://2130706433/"}}`,
		`{"type":"echo","webhook":{"url":"http://[fe80::1%25eth0]/"}}`,
		`{"type":"echo","webhook":{"url":"https://localhost./"}}`,
		`{"type":"echo","webhook":{"url":"javascript:alert(1)"}}`,
		`{"type":"echo","webhook":{}}`,
		`{"type":"echo","webhook":null}`,
		``,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		rec := fx.post(body)
		if rec.Code == http.StatusAccepted {
			var req struct {
				Type    string          `json:"type"`
				Input   json.RawMessage `json:"input"`
				Webhook *webhook.Spec   `json:"webhook"`
			}
			if err := json.Unmarshal([]byte(body), &req); err != nil {
				t.Fatalf("accepted a body that does not decode: %v", err)
			}
			if req.Webhook != nil {
				ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
				defer cancel()
				if err := (&webhook.Guard{Resolver: stalledDNS}).CheckURL(ctx, req.Webhook.URL); err != nil {
					t.Fatalf("accepted a webhook the guard refuses: %v", err)
				}
				if strings.Contains(rec.Body.String(), req.Webhook.URL) {
					t.Fatalf("the 202 echoes the webhook URL: %s", rec.Body)
				}
			}
			in := req.Input
			if len(bytes.TrimSpace(in)) == 0 {
				in = json.RawMessage("{}")
			}
			if err := jobs.CheckInput(in, jobs.InputLimits{}); err != nil {
				t.Fatalf("accepted an input past the limits: %v", err)
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(in))
			if err != nil {
				t.Fatalf("accepted an input the library cannot read: %v", err)
			}
			if err := schemas[req.Type].Validate(doc); err != nil {
				t.Fatalf("accepted an input its schema refuses: %v", err)
			}
			return
		}
		var p problemBody
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || rec.Header().Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%d answer is not problem+json: %q", rec.Code, rec.Body)
		}
		switch rec.Code {
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		case http.StatusUnprocessableEntity:
			if p.Type == "urn:claimcheck:problem:invalid-request" && strings.Contains(p.Detail, "webhook") {
				for _, e := range p.Errors {
					if !strings.HasPrefix(e.Pointer, "/webhook/") || e.Detail == "" {
						t.Fatalf("webhook error %+v does not point into the webhook", e)
					}
				}
			}
			if p.Type != "urn:claimcheck:problem:invalid-input" {
				break
			}
			for _, e := range p.Errors {
				if !strings.HasPrefix(e.Pointer, "/input") || e.Detail == "" {
					t.Fatalf("input error %+v does not point into the input", e)
				}
			}
		default:
			t.Fatalf("answered %d %s", rec.Code, rec.Body)
		}
	})
}
