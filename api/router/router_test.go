package router_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/router"
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
