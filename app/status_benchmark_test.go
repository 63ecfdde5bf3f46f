package app_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/internal/secret"
	"github.com/claimcheck/claimcheck/internal/testutil/httpload"
)

// BenchmarkJobStatus compares GET /v1/jobs/{id} on the progress service
// (job token, verification cache warm) with two baselines in one run, over
// HTTP on loopback:
//
//   - bare: a bare Gin handler answering the same job's JSON from memory;
//   - session: what a service without job tokens does — look up an opaque
//     session in Redis, then the user, then read the job.
//
// Targets: status ≥ 0.6× bare, and ≥ 2× session.
//
//	go test -run '^$' -bench JobStatus -benchtime 10x -count 3 ./app/
func BenchmarkJobStatus(b *testing.B) {
	s := newStack(b)
	ctx := context.Background()
	sub := s.submit(b, `{"type":"count"}`)
	job := s.waitState(b, sub, jobs.StateSucceeded)

	gin.SetMode(gin.ReleaseMode)
	bare := gin.New()
	bare.GET("/v1/jobs/:id", func(c *gin.Context) { c.JSON(http.StatusOK, &job) })
	bareSrv := httptest.NewServer(bare)
	defer bareSrv.Close()

	sess, _, err := s.dir.Sessions.Create(ctx, "ann", "", "")
	if err != nil {
		b.Fatal(err)
	}
	store := jobs.NewStore(s.rdb, nil)
	baseline := gin.New()
	baseline.GET("/v1/jobs/:id", func(c *gin.Context) {
		cred, _ := secret.FromAuthorization(c.GetHeader("Authorization"))
		p, err := s.dir.Sessions.Authenticate(c, cred)
		if err != nil {
			c.Status(http.StatusUnauthorized)
			return
		}
		if u, err := s.dir.Users.Get(c, p.UserID); err != nil || u.Blocked {
			c.Status(http.StatusForbidden)
			return
		}
		j, err := store.Get(c, c.Param("id"))
		if err != nil || j.Owner != p.UserID {
			c.Status(http.StatusNotFound)
			return
		}
		c.JSON(http.StatusOK, j)
	})
	sessSrv := httptest.NewServer(baseline)
	defer sessSrv.Close()

	get := func(base, bearer string) func() *http.Request {
		return func() *http.Request {
			r, _ := http.NewRequest("GET", base+"/v1/jobs/"+sub.ID, nil)
			r.Header.Set("Authorization", "Bearer "+bearer)
			return r
		}
	}
	httpload.Compare(b, 8, 2000,
		httpload.Target{Name: "bare", Request: get(bareSrv.URL, "x")},
		httpload.Target{Name: "status", Request: get(s.progress.URL, sub.Token)},
		httpload.Target{Name: "session", Request: get(sessSrv.URL, sess.Reveal())},
	)
}
