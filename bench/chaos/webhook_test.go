package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestReceiverChecks runs the receiver against a JWKS on loopback: a
// validly signed completed event of a webhook job counts, a request signed
// by a key of another kind is refused and a violation, a delivery for a
// job without a webhook is a violation, and an ended webhook job without
// its completed event is one too.
func TestReceiverChecks(t *testing.T) {
	hookPub, hookKey, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{
			{"kty": "OKP", "crv": "Ed25519", "kid": "w1", "kind": "webhook", "x": base64.RawURLEncoding.EncodeToString(hookPub)},
			{"kty": "OKP", "crv": "Ed25519", "kid": "j1", "kind": "job", "x": base64.RawURLEncoding.EncodeToString(otherPub)},
		}})
	}))
	defer jwks.Close()
	r, err := NewReceiver(jwks.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	send := func(key ed25519.PrivateKey, job, state string) int {
		id := "msg_" + job + "_completed"
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		body := fmt.Sprintf(`{"type":"job.completed","data":{"job":{"id":%q,"state":%q}}}`, job, state)
		sig := base64.StdEncoding.EncodeToString(ed25519.Sign(key, []byte(id+"."+ts+"."+body)))
		req, _ := http.NewRequest(http.MethodPost, r.URL, bytes.NewBufferString(body))
		req.Header.Set("webhook-id", id)
		req.Header.Set("webhook-timestamp", ts)
		req.Header.Set("webhook-signature", "v1a,"+sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := send(hookKey, "jA", "succeeded"); got != http.StatusNoContent {
		t.Fatalf("valid delivery: %d, want 204", got)
	}
	if got := send(hookKey, "jA", "succeeded"); got != http.StatusNoContent {
		t.Fatalf("duplicate delivery: %d, want 204", got)
	}
	if got := send(otherKey, "jB", "failed"); got != http.StatusBadRequest {
		t.Fatalf("delivery signed by a job key: %d, want 400", got)
	}
	if got := send(hookKey, "jC", "succeeded"); got != http.StatusNoContent {
		t.Fatalf("delivery for a plain job: %d, want 204", got)
	}
	tracked := func(id, hook, state string) *Tracked {
		return &Tracked{Submitted: &Submitted{ID: id, Spec: Spec{Webhook: hook}}, Final: &JobView{ID: id, State: state}}
	}
	tr := &Tracker{jobs: []*Tracked{tracked("jA", r.URL, "succeeded"), tracked("jB", r.URL, "failed"), tracked("jC", "", "succeeded")}}
	o := &Outcome{}
	r.CheckWebhooks(context.Background(), o, tr, 200*time.Millisecond)
	all := strings.Join(o.Violations, "\n")
	for _, want := range []string{"1 request(s) refused", "for jC (a job without a webhook)", "1 ended webhook job(s) without a completed event", "jB (ended failed"} {
		if !strings.Contains(all, want) {
			t.Errorf("violations lack %q:\n%s", want, all)
		}
	}
	if len(o.Violations) != 3 {
		t.Errorf("%d violations, want 3:\n%s", len(o.Violations), all)
	}
	if len(o.Notes) != 1 || !strings.Contains(o.Notes[0], "2 webhook jobs (2 ended), 2 completed events received, 1 duplicate") {
		t.Errorf("notes: %q", o.Notes)
	}
}
