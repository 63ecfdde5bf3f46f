package enqueue_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/internal/redistest"
)

// problemBody is the part of a problem+json answer these tests read.
type problemBody struct {
	Type   string `json:"type"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Errors []struct {
		Pointer string `json:"pointer"`
		Detail  string `json:"detail"`
	} `json:"errors"`
}

// TestFinding3HostileNumbersAnswer422 sends bodies built to burn CPU in, or
// crash, the schema library (issue 10, finding 3): exponents past a million
// (a nil big.Rat inside the library, once a 500), exponents just past
// float64, digit strings, deep nesting, a 1 MiB array of numbers, too many
// values, a long string, a duplicated member. Each must answer 422
// invalid-input naming the offending place by JSON Pointer into the request
// body, and create no job.
func TestFinding3HostileNumbersAnswer422(t *testing.T) {
	f := newFixture(t, nil)
	sleep := func(input string) string { return `{"type":"sleep","input":` + input + `}` }
	// numbers fills a body with the largest float64s to size bytes.
	numbers := func(size int) string {
		var sb strings.Builder
		sb.WriteString(`{"type":"sleep","input":{"tags":[1e308`)
		for sb.Len() < size-len(`]}}`)-len(`,1e308`) {
			sb.WriteString(`,1e308`)
		}
		sb.WriteString(`]}}`)
		return sb.String()
	}
	for _, tc := range []struct {
		name, body, pointer string
	}{
		{"exponent past a million, number field", sleep(`{"seconds":1e1000001}`), "/input/seconds"},
		{"exponent of a million", sleep(`{"seconds":1e1000000}`), "/input/seconds"},
		{"exponent past a million, integer field", `{"type":"echo","input":{"n":1e1000001}}`, "/input/n"},
		{"seven exponents of a million", sleep(`{"tags":[1e1000000,1e1000000,1e1000000,1e1000000,1e1000000,1e1000000,1e1000000]}`), "/input/tags/0"},
		{"past float64", sleep(`{"seconds":1e400}`), "/input/seconds"},
		{"past float64, negative", sleep(`{"seconds":-1e400}`), "/input/seconds"},
		{"below float64", sleep(`{"seconds":1e-400}`), "/input/seconds"},
		{"zero with a huge exponent", sleep(`{"seconds":0e999999999}`), "/input/seconds"},
		{"long digit string", sleep(`{"seconds":` + strings.Repeat("9", 10000) + `}`), "/input/seconds"},
		{"long fraction", sleep(`{"seconds":0.` + strings.Repeat("1", 10000) + `}`), "/input/seconds"},
		{"deep nesting", sleep(`{"tags":` + strings.Repeat("[", 1000) + strings.Repeat("]", 1000) + `}`), "/input/tags" + strings.Repeat("/0", 31)},
		{"input over 64 KiB", numbers(70 << 10), "/input"},
		{"too many values", sleep(`{"tags":[` + strings.Repeat("0,", 2000) + `0]}`), "/input/tags/1022"},
		{"long string", sleep(`{"note":"` + strings.Repeat("a", 20<<10) + `"}`), "/input/note"},
		{"duplicate member", sleep(`{"seconds":1,"seconds":4000}`), "/input/seconds"},
		{"schema violation", sleep(`{"seconds":-1}`), "/input/seconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := f.post(tc.body)
			var p problemBody
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
				t.Fatalf("%d: body is not JSON: %.300s", rec.Code, rec.Body)
			}
			if rec.Code != http.StatusUnprocessableEntity || rec.Header().Get("Content-Type") != "application/problem+json" ||
				p.Type != "urn:claimcheck:problem:invalid-input" {
				t.Fatalf("%d %s %q: want 422 invalid-input; body %.300s", rec.Code, rec.Header().Get("Content-Type"), p.Type, rec.Body)
			}
			if len(p.Errors) == 0 || p.Errors[0].Pointer != tc.pointer || p.Errors[0].Detail == "" {
				t.Fatalf("errors %+v: want pointer %q first", p.Errors, tc.pointer)
			}
			if len(rec.Body.String()) > 4096 {
				t.Fatalf("the answer echoes the input: %d bytes", rec.Body.Len())
			}
			if jobs := redistest.Keys(t, f.rdb, "cc:job:*"); len(jobs) != 0 {
				t.Fatalf("a refused body created %v", jobs)
			}
		})
	}
	// A hostile body just under the 1 MiB body limit: its input is over
	// its type's 64 KiB, which is told by pointer before any of it is
	// parsed; a body over the body limit is refused as it is read.
	for _, tc := range []struct {
		size    int
		status  int
		problem string
	}{
		{1<<20 - 64, http.StatusUnprocessableEntity, "invalid-input"},
		{1<<20 + 64, http.StatusRequestEntityTooLarge, "body-too-large"},
	} {
		rec := f.post(numbers(tc.size))
		var p problemBody
		_ = json.Unmarshal(rec.Body.Bytes(), &p)
		if rec.Code != tc.status || p.Type != "urn:claimcheck:problem:"+tc.problem {
			t.Fatalf("%d bytes of numbers: %d %.300s", tc.size, rec.Code, rec.Body)
		}
		if tc.status == http.StatusUnprocessableEntity && (len(p.Errors) == 0 || p.Errors[0].Pointer != "/input") {
			t.Fatalf("%d bytes of numbers: errors %+v, want pointer /input", tc.size, p.Errors)
		}
	}
	if jobs := redistest.Keys(t, f.rdb, "cc:job:*"); len(jobs) != 0 {
		t.Fatalf("a refused body created %v", jobs)
	}
	// The same types still take ordinary input.
	if rec := f.post(sleep(`{"seconds":1.5e0,"tags":[1,2.5,-3e-5,"x",{"a":[true,null]}],"note":"hi"}`)); rec.Code != http.StatusAccepted {
		t.Fatalf("ordinary input: %d %s", rec.Code, rec.Body)
	}
}
