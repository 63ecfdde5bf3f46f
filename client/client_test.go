package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/app/devstack"
	"github.com/claimcheck/claimcheck/client"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/testutil/waitfor"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// server runs claimcheck on one origin (as `claimcheck dev` does) behind
// wrap, and returns its URL and an API key.
func server(tb testing.TB, wrap func(http.Handler) http.Handler) (string, string) {
	tb.Helper()
	s := devstack.Start(tb, redistest.Client(tb), devstack.Options{Wrap: wrap})
	return s.URL, s.APIKey
}

func TestSubmitWaitDownload(t *testing.T) {
	url, key := server(t, nil)
	c := client.New(url, client.WithCredential(key))
	ctx := context.Background()
	sub, err := c.Submit(ctx, client.SubmitRequest{Type: "sleep", Input: json.RawMessage(`{"seconds":0.3,"steps":3}`), IdempotencyKey: "k1"})
	if err != nil || sub.Token == "" || sub.State != "queued" {
		t.Fatalf("submit: %+v %v", sub, err)
	}
	again, err := c.Submit(ctx, client.SubmitRequest{Type: "sleep", Input: json.RawMessage(`{"seconds":0.3,"steps":3}`), IdempotencyKey: "k1"})
	if err != nil || again.ID != sub.ID {
		t.Fatalf("idempotent resubmit: %+v %v", again, err)
	}
	var updates []float64
	final, err := c.Wait(ctx, sub.ID, sub.Token, func(j *client.Job) { updates = append(updates, j.Progress.Percent) })
	if err != nil || final.State != "succeeded" || final.Result == nil || final.Result.ContentType != "application/json" {
		t.Fatalf("wait: %+v %v", final, err)
	}
	if len(updates) < 2 {
		t.Fatalf("only %d updates: %v", len(updates), updates)
	}
	var out bytes.Buffer
	n, err := c.Download(ctx, sub.ID, sub.Token, &out)
	if err != nil || n != final.Result.Size || !strings.Contains(out.String(), `"slept_seconds":0.3`) {
		t.Fatalf("download: %d %q %v", n, out.String(), err)
	}
	link, err := c.Link(ctx, sub.ID, sub.Token, client.LinkOptions{Filename: "out.json"})
	if err != nil || !strings.HasPrefix(link.URL, url+"/v1/results/") {
		t.Fatalf("link: %+v %v", link, err)
	}
	once, err := c.Link(ctx, sub.ID, sub.Token, client.LinkOptions{Once: true})
	if err != nil || !once.Once || link.Once {
		t.Fatalf("one-time link: %+v %v (plain %+v)", once, err, link)
	}
	for i, want := range []int{http.StatusOK, http.StatusGone} {
		var code int
		waitfor.True(t, 5*time.Second, func() bool {
			resp, err := http.Get(once.URL)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			code = resp.StatusCode
			return code != http.StatusConflict // the first download's end is recorded just after its last byte
		})
		if code != want {
			t.Fatalf("one-time link, download %d: %d, want %d", i, code, want)
		}
	}
	list, err := c.List(ctx, client.ListOptions{State: "succeeded"})
	if err != nil || len(list.Jobs) != 1 || list.Jobs[0].ID != sub.ID {
		t.Fatalf("list: %+v %v", list, err)
	}
}

// Without an event stream (an older server, a proxy that drops them), Wait
// long-polls.
func TestWaitFallsBackToLongPoll(t *testing.T) {
	var polls atomic.Int32
	url, key := server(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/events") {
				http.NotFound(w, r)
				return
			}
			if r.Header.Get("Prefer") != "" {
				polls.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	})
	c := client.New(url, client.WithCredential(key))
	ctx := context.Background()
	sub, err := c.Submit(ctx, client.SubmitRequest{Type: "sleep", Input: json.RawMessage(`{"seconds":0.3,"steps":3}`)})
	if err != nil {
		t.Fatal(err)
	}
	final, err := c.Wait(ctx, sub.ID, sub.Token, nil)
	if err != nil || final.State != "succeeded" || polls.Load() == 0 {
		t.Fatalf("wait by long-poll: %+v %v (%d long-polls)", final, err, polls.Load())
	}
}

// A download cut off mid-body resumes with Range and If-Range.
func TestDownloadResumes(t *testing.T) {
	var cut atomic.Bool
	url, key := server(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/result") && cut.CompareAndSwap(false, true) {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				body := rec.Body.Bytes()
				_, _ = w.Write(body[:len(body)/2])
				panic(http.ErrAbortHandler) // drop the connection mid-body
			}
			h.ServeHTTP(w, r)
		})
	})
	c := client.New(url, client.WithCredential(key))
	ctx := context.Background()
	sub, err := c.Submit(ctx, client.SubmitRequest{Type: "mandelbrot", Input: json.RawMessage(`{"width":200,"height":150,"max_iter":50}`)})
	if err != nil {
		t.Fatal(err)
	}
	final, err := c.Wait(ctx, sub.ID, sub.Token, nil)
	if err != nil || final.Result == nil {
		t.Fatalf("wait: %+v %v", final, err)
	}
	var got bytes.Buffer
	n, err := c.Download(ctx, sub.ID, sub.Token, &got)
	if err != nil || n != final.Result.Size || !cut.Load() || !bytes.HasPrefix(got.Bytes(), []byte("\x89PNG")) {
		t.Fatalf("resumed download: %d of %d bytes, %v (cut: %v)", n, final.Result.Size, err, cut.Load())
	}
}

func TestTypedErrors(t *testing.T) {
	url, key := server(t, nil)
	ctx := context.Background()
	c := client.New(url, client.WithCredential(key))
	_, err := c.Submit(ctx, client.SubmitRequest{Type: "nope"})
	var e *client.Error
	if !errors.As(err, &e) || !errors.Is(err, client.ErrInvalid) || e.Type != "urn:claimcheck:problem:unknown-job-type" || e.Extensions["known_types"] == nil {
		t.Fatalf("unknown type: %#v", err)
	}
	if _, err := client.New(url, client.WithCredential("cck_wrong_0123456789abcdef")).List(ctx, client.ListOptions{}); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("bad key: %v", err)
	}
	a, _ := c.Submit(ctx, client.SubmitRequest{Type: "sleep", Input: json.RawMessage(`{"seconds":0}`)})
	b, _ := c.Submit(ctx, client.SubmitRequest{Type: "sleep", Input: json.RawMessage(`{"seconds":0}`)})
	if _, err := c.Get(ctx, b.ID, a.Token); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("another job's token: %v", err)
	}
	if _, err := c.Get(ctx, a.ID, "garbage"); !errors.Is(err, client.ErrUnauthorized) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("garbage token: %v", err)
	}
}
