package app_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

// TestEveryRedisRouteIs503WhenRedisIsAway sweeps every route of the api
// and the progress service that reads Redis, with Redis frozen (SIGSTOP)
// and then killed: each answers within the bound, never 500, and either
// serves what it can without Redis (a progress service answers a record
// it has cached, a result on disk) or says 503 with Retry-After.
func TestEveryRedisRouteIs503WhenRedisIsAway(t *testing.T) {
	s := newAwayStack(t)
	// A finished job with a result, and a download link for it.
	a := s.do("POST", s.api.URL+"/v1/jobs", s.apiKey, `{"type":"primes","input":{"n":1000}}`)
	if a.status != http.StatusAccepted {
		t.Fatalf("submit: %d %v", a.status, a.body)
	}
	done, _ := a.body["id"].(string)
	doneToken, _ := a.body["token"].(string)
	waitfor.True(t, 20*time.Second, func() bool {
		a := s.do("GET", s.progress.URL+"/v1/jobs/"+done, doneToken, "")
		return a.status == http.StatusOK && a.body["state"] == "succeeded"
	})
	l := s.do("POST", s.progress.URL+"/v1/jobs/"+done+"/links", doneToken, "")
	link, _ := l.body["url"].(string)
	if l.status != http.StatusOK && l.status != http.StatusCreated || link == "" {
		t.Fatalf("link: %d %v", l.status, l.body)
	}
	if !strings.HasPrefix(link, "http") {
		link = s.progress.URL + link
	}

	for _, fault := range []struct {
		name       string
		stop, back func()
	}{
		{"SIGSTOP", s.redis.Pause, s.redis.Resume},
		{"SIGKILL", s.redis.Kill, s.redis.Restart},
	} {
		t.Run(fault.name, func(t *testing.T) {
			id, token := s.submit(t) // not read by the progress service yet
			fault.stop()
			defer fault.back()
			routes := []struct {
				method, url, bearer, body string
			}{
				{"POST", s.api.URL + "/v1/jobs", s.apiKey, awayJob},
				{"GET", s.api.URL + "/v1/jobs", s.apiKey, ""},
				{"GET", s.api.URL + "/v1/job-types", "", ""},
				{"POST", s.api.URL + "/v1/jobs/" + id + "/token", s.apiKey, ""},
				{"POST", s.api.URL + "/v1/jobs/" + id + "/revoke-tokens", s.apiKey, ""},
				{"POST", s.api.URL + "/v1/sessions", "", `{"username":"ann","password":"nope"}`},
				{"GET", s.progress.URL + "/v1/jobs/" + id, token, ""},
				{"GET", s.progress.URL + "/v1/jobs/" + id + "/events?token=" + token, "", ""},
				{"GET", s.progress.URL + "/v1/jobs/" + id + "/logs", token, ""},
				{"POST", s.progress.URL + "/v1/jobs/" + id + "/cancel", token, ""},
				{"GET", s.progress.URL + "/v1/jobs/" + done + "/result", doneToken, ""},
				{"POST", s.progress.URL + "/v1/jobs/" + done + "/links", doneToken, ""},
				{"GET", link, "", ""},
			}
			// All at once: each may take the whole bound.
			answers := make([]answer, len(routes))
			var wg sync.WaitGroup
			for i, r := range routes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					answers[i] = s.do(r.method, r.url, r.bearer, r.body)
				}()
			}
			wg.Wait()
			for i, r := range routes {
				what := r.method + " " + strings.SplitN(strings.TrimPrefix(strings.TrimPrefix(r.url, s.api.URL), s.progress.URL), "?", 2)[0]
				switch a := answers[i]; {
				case a.err != nil:
					t.Errorf("%s: no answer within %v: %v", what, redisBound+3*time.Second, a.err)
				case a.status == http.StatusServiceUnavailable:
					if a.header.Get("Retry-After") == "" || a.header.Get("Content-Type") != "application/problem+json" {
						t.Errorf("%s: 503 without Retry-After or problem+json: %v %v", what, a.header, a.body)
					}
				case a.status >= 500:
					t.Errorf("%s: %d %v", what, a.status, a.body)
				default:
					t.Logf("%s: %d", what, a.status)
				}
			}
		})
	}
}
