package problem_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/api/problem"
)

// TestSharedProblemsKeepTheirOwnInstance answers two requests with one
// ready-made problem value: each response names its own path, and the
// shared value is left as it was (it used to keep the first request's path
// for every later one, across clients).
func TestSharedProblemsKeepTheirOwnInstance(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	shared := problem.Unauthorized("sign in", `Bearer realm="claimcheck"`)
	r := gin.New()
	r.GET("/v1/jobs/:id", func(c *gin.Context) { problem.Abort(c, shared) })

	for _, path := range []string{"/v1/jobs/a", "/v1/jobs/b"} {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		var body struct {
			Status   int
			Instance string
		}
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		if w.Code != 401 || body.Status != 401 || body.Instance != path || w.Header().Get("WWW-Authenticate") == "" ||
			w.Header().Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%s: %d %+v %v", path, w.Code, body, w.Header())
		}
	}
	if shared.Instance != "" {
		t.Fatalf("the shared problem was changed: instance %q", shared.Instance)
	}
}
