package router_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/router"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

// TestAccessLogAndRequestIDs checks the shared middleware: every response
// carries a request id (a proxy's well-formed one kept, anything else
// replaced), the access log line carries the same id, and the log holds the
// path but never the query string, where credentials may ride.
func TestAccessLogAndRequestIDs(t *testing.T) {
	var logs bytes.Buffer
	r := router.New(slog.New(slog.NewJSONHandler(&logs, nil)))
	r.GET("/v1/things/:id", func(c *gin.Context) { c.String(http.StatusOK, "ok") })

	serve := func(target, requestID string) (string, map[string]any) {
		t.Helper()
		logs.Reset()
		req := httptest.NewRequest(http.MethodGet, target, nil)
		if requestID != "" {
			req.Header.Set(router.RequestIDHeader, requestID)
		}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if strings.Contains(logs.String(), "secret-value") {
			t.Fatalf("the access log holds the query string: %s", logs.String())
		}
		var line map[string]any
		if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
			t.Fatalf("access log %q: %v", logs.String(), err)
		}
		return w.Header().Get(router.RequestIDHeader), line
	}

	id, line := serve("/v1/things/7?token=secret-value", "edge-42")
	if id != "edge-42" || line["request_id"] != "edge-42" || line["path"] != "/v1/things/7" || line["status"] != float64(200) {
		t.Fatalf("kept id: header %q, log %v", id, line)
	}
	id, line = serve("/v1/things/7?sig=secret-value", "bad id\twith spaces")
	if !regexp.MustCompile(`^[0-9a-f]{24}$`).MatchString(id) || line["request_id"] != id {
		t.Fatalf("replaced id: header %q, log %v", id, line)
	}
	if other, _ := serve("/v1/things/8", ""); other == id || other == "" {
		t.Fatalf("made ids %q and %q: want distinct ones", id, other)
	}
}

// TestFinding3PanicIsProblemJSON panics in a handler (issue 10, finding 3:
// a hostile number once panicked inside the schema library). The client
// gets a problem+json 500 "internal" with no detail and nothing of the
// panic; the server log gets one structured error line with the panic value
// and the stack, and never the request's credentials; nothing is written
// to gin's own unstructured error writer; the process serves on.
func TestFinding3PanicIsProblemJSON(t *testing.T) {
	var logs lockedBuffer // the late case below logs from the server's goroutine
	var ginOut bytes.Buffer
	saved := gin.DefaultErrorWriter
	gin.DefaultErrorWriter = &ginOut
	t.Cleanup(func() { gin.DefaultErrorWriter = saved })
	r := router.New(slog.New(slog.NewJSONHandler(&logs, nil)))
	r.POST("/v1/boom", func(c *gin.Context) { panic("kaboom in handler") })
	var nilMap map[string]int
	r.GET("/v1/boom/:id", func(c *gin.Context) { nilMap[c.Param("id")]++ }) // a runtime error

	for _, tc := range []struct{ method, path, value string }{
		{http.MethodPost, "/v1/boom", "kaboom in handler"},
		{http.MethodGet, "/v1/boom/7", "assignment to entry in nil map"},
	} {
		logs.Reset()
		req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(`{"x":1}`))
		req.Header.Set("Authorization", "Bearer secret-bearer-value")
		req.Header.Set("Cookie", "cc_session=secret-cookie-value")
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)

		var body map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: body %q: %v", tc.path, w.Body, err)
		}
		if w.Code != http.StatusInternalServerError || w.Header().Get("Content-Type") != "application/problem+json" ||
			body["type"] != "urn:claimcheck:problem:internal" || body["status"] != float64(500) || body["detail"] != nil {
			t.Fatalf("%s: %d %v %v", tc.path, w.Code, w.Header(), body)
		}
		for _, leak := range []string{"goroutine", ".go:", "panic", "kaboom", "nil map", "secret"} {
			if strings.Contains(strings.ToLower(w.Body.String()), leak) {
				t.Fatalf("%s: the answer holds %q: %s", tc.path, leak, w.Body)
			}
		}
		var line map[string]any
		for l := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["level"] == "ERROR" {
				line = m
			}
		}
		stack, _ := line["stack"].(string)
		panicValue, _ := line["panic"].(string)
		if !strings.Contains(panicValue, tc.value) || !strings.Contains(stack, "router_test.go") ||
			line["path"] != tc.path || line["request_id"] == "" || line["request_id"] != w.Header().Get(router.RequestIDHeader) {
			t.Fatalf("%s: no error line with the panic, its stack and the request id: %s", tc.path, logs.String())
		}
		if strings.Contains(logs.String(), "secret") || ginOut.Len() != 0 {
			t.Fatalf("%s: credentials in the log, or gin's own dump written: %s / %q", tc.path, logs.String(), ginOut.String())
		}
	}
	// A panic once the answer has started cannot become a problem: the
	// connection is cut, so the client sees a broken answer, not a short
	// one that looks whole, and the server log still gets the stack.
	r.GET("/v1/late", func(c *gin.Context) {
		c.String(http.StatusOK, "partial")
		c.Writer.Flush()
		panic("kaboom after writing")
	})
	srv := httptest.NewServer(r)
	defer srv.Close()
	logs.Reset()
	resp, err := http.Get(srv.URL + "/v1/late")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || strings.Contains(string(body), "goroutine") {
		t.Fatalf("late panic: read %q, %v", body, err)
	}
	waitfor.True(t, 5*time.Second, func() bool { return strings.Contains(logs.String(), "kaboom after writing") })
	resp, err = http.Get(srv.URL + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after the panics /healthz answers %v, %v", resp, err)
	}
	resp.Body.Close()
}

// lockedBuffer is a bytes.Buffer safe for a server goroutine to write while
// the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}
