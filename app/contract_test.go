package app_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/claimcheck/claimcheck/api"
	"github.com/claimcheck/claimcheck/internal/redistest"
)

// The contract test: every response the end-to-end tests receive through
// http.DefaultClient is checked against api/openapi.yaml — its route,
// status, headers and (JSON) body. A mismatch fails the package, so the
// document cannot drift from the product.

// contract validates responses against the OpenAPI document.
type contract struct {
	router routers.Router
	base   http.RoundTripper

	mu         sync.Mutex
	violations map[string]int
	operations map[string]bool
}

func newContract() (*contract, error) {
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPI)
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, err
	}
	doc.Servers = nil // test servers listen on any port
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	openapi3filter.RegisterBodyDecoder("application/problem+json", openapi3filter.JSONBodyDecoder)
	return &contract{router: r, base: http.DefaultTransport, violations: map[string]int{}, operations: map[string]bool{}}, nil
}

// contractMain runs the package's tests with the contract checked on every
// response, and fails them if any response broke it.
func contractMain(m *testing.M) int {
	c, err := newContract()
	if err != nil {
		fmt.Fprintln(os.Stderr, "api/openapi.yaml:", err)
		return 2
	}
	http.DefaultClient.Transport = c
	code := redistest.Run(m)
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(os.Stderr, "contract: %d documented operations exercised\n", len(c.operations))
	if len(c.violations) > 0 {
		keys := make([]string, 0, len(c.violations))
		for k := range c.violations {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintln(os.Stderr, "contract: responses that do not match api/openapi.yaml:")
		for _, k := range keys {
			fmt.Fprintf(os.Stderr, "  %s (%d×)\n", k, c.violations[k])
		}
		if code == 0 {
			code = 1
		}
	}
	return code
}

// RoundTrip implements http.RoundTripper.
func (c *contract) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	c.check(req, resp)
	return resp, nil
}

// ours reports whether a path is claimcheck's API (a test may also talk to
// a service behind nginx, or load the UI's assets).
func ours(path string) bool {
	return strings.HasPrefix(path, "/v1/") || strings.HasPrefix(path, "/.well-known/") ||
		path == "/healthz" || path == "/readyz" || path == "/metrics" || path == "/openapi.yaml"
}

func (c *contract) check(req *http.Request, resp *http.Response) {
	if !ours(req.URL.Path) {
		return
	}
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		if errors.Is(err, routers.ErrMethodNotAllowed) && resp.StatusCode == http.StatusMethodNotAllowed {
			return // a test asking for a method the route lacks, and told so
		}
		if resp.StatusCode == http.StatusNotFound && strings.Contains(resp.Header.Get("Content-Type"), "problem+json") {
			return // a test asking for a route that does not exist, and told so
		}
		c.record(fmt.Sprintf("%s %s: undocumented route (%d)", req.Method, req.URL.Path, resp.StatusCode))
		return
	}
	c.mu.Lock()
	c.operations[req.Method+" "+route.Path] = true
	c.mu.Unlock()
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status:  resp.StatusCode,
		Header:  resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if req.Method == http.MethodHead || (mt != "application/json" && mt != "application/problem+json") {
		// Event streams, results and text: their schema is "a string".
		input.Options.ExcludeResponseBody = true
	} else {
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if err != nil {
			return
		}
		input.SetBodyBytes(body)
	}
	if err := openapi3filter.ValidateResponse(context.Background(), input); err != nil {
		msg := err.Error()
		if i := strings.IndexByte(msg, '\n'); i > 0 {
			msg = msg[:i]
		}
		c.record(fmt.Sprintf("%s %s → %d: %s", req.Method, route.Path, resp.StatusCode, msg))
	}
}

func (c *contract) record(v string) {
	c.mu.Lock()
	c.violations[v]++
	c.mu.Unlock()
}

// TestOpenAPIServed checks the document is served as it is in the source.
func TestOpenAPIServed(t *testing.T) {
	s := newStack(t)
	r := do(t, "GET", s.api.URL+"/openapi.yaml", "", nil)
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || !bytes.Equal(body, api.OpenAPI) || r.Header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("/openapi.yaml: %d %q, %d bytes", r.StatusCode, r.Header.Get("Content-Type"), len(body))
	}
}
