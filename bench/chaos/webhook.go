package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Receiver is a webhook receiver on loopback: it verifies every request's
// v1a signature against the api's JWKS keys of kind "webhook" and records
// what arrived, by webhook-id and by job.
type Receiver struct {
	URL  string
	jwks string
	srv  *http.Server

	mu   sync.Mutex
	keys []ed25519.PublicKey
	// byID counts the deliveries of each webhook-id.
	byID map[string]int
	// byJob is every verified delivery, by data.job.id.
	byJob map[string][]Delivery
	// bad are the requests whose signature did not verify (or that had no
	// job), as one line each.
	bad []string
}

// Delivery is one verified request.
type Delivery struct {
	ID    string
	Type  string
	State string
	At    time.Time
}

// NewReceiver listens on a free loopback port; jwks is the api's JWKS URL.
func NewReceiver(jwks string) (*Receiver, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Receiver{URL: "http://" + l.Addr().String() + "/hook", jwks: jwks,
		byID: map[string]int{}, byJob: map[string][]Delivery{}}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = r.srv.Serve(l) }()
	return r, nil
}

// Close stops the receiver.
func (r *Receiver) Close() { _ = r.srv.Close() }

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	id := req.Header.Get("webhook-id")
	if err := r.verify(req.Context(), req.Header, body); err != nil {
		r.refuse(w, fmt.Sprintf("%s: %v", id, err))
		return
	}
	var ev struct {
		Type string
		Data struct {
			Job struct{ ID, State string }
		}
	}
	if err := json.Unmarshal(body, &ev); err != nil || ev.Data.Job.ID == "" {
		r.refuse(w, fmt.Sprintf("%s: payload without data.job.id", id))
		return
	}
	r.mu.Lock()
	r.byID[id]++
	r.byJob[ev.Data.Job.ID] = append(r.byJob[ev.Data.Job.ID], Delivery{ID: id, Type: ev.Type, State: ev.Data.Job.State, At: time.Now()})
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *Receiver) refuse(w http.ResponseWriter, line string) {
	r.mu.Lock()
	r.bad = append(r.bad, line)
	r.mu.Unlock()
	w.WriteHeader(http.StatusBadRequest)
}

// verify checks the v1a signature over <id>.<timestamp>.<body> against the
// webhook keys, fetching the JWKS again once when none verifies (a worker
// publishes its keys when it starts).
func (r *Receiver) verify(ctx context.Context, h http.Header, body []byte) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook headers")
	}
	msg := []byte(id + "." + ts + "." + string(body))
	for _, force := range []bool{false, true} {
		keys, err := r.load(ctx, force)
		if err != nil {
			return err
		}
		for _, s := range strings.Fields(sigs) {
			b64, ok := strings.CutPrefix(s, "v1a,")
			sig, err := base64.StdEncoding.DecodeString(b64)
			if !ok || err != nil {
				continue
			}
			for _, pub := range keys {
				if ed25519.Verify(pub, msg, sig) {
					return nil
				}
			}
		}
	}
	return errors.New("no v1a signature verifies against the JWKS webhook keys")
}

func (r *Receiver) load(ctx context.Context, force bool) ([]ed25519.PublicKey, error) {
	r.mu.Lock()
	keys := r.keys
	r.mu.Unlock()
	if keys != nil && !force {
		return keys, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.jwks, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	defer resp.Body.Close()
	var doc struct {
		Keys []struct{ Kty, Crv, X, Kind string }
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	keys = nil
	for _, k := range doc.Keys {
		raw, err := base64.RawURLEncoding.DecodeString(k.X)
		if k.Kind == "webhook" && k.Kty == "OKP" && k.Crv == "Ed25519" && err == nil && len(raw) == ed25519.PublicKeySize {
			keys = append(keys, ed25519.PublicKey(raw))
		}
	}
	r.mu.Lock()
	r.keys = keys
	r.mu.Unlock()
	return keys, nil
}

// completedIn reports whether ds holds a completed event showing state.
func completedIn(ds []Delivery, state string) bool {
	for _, d := range ds {
		if d.Type == "job.completed" && d.State == state {
			return true
		}
	}
	return false
}

// CheckWebhooks waits up to wait for every ended webhook job of tr to have
// a completed delivery showing its final state, then adds a violation for
// each broken webhook invariant: a missing completed event, an invalid
// signature, a completed event under two webhook-ids (or under one that is
// not msg_<job>_completed), a completed event showing another state than
// the record's final one, and any delivery for a job without a webhook.
func (r *Receiver) CheckWebhooks(ctx context.Context, o *Outcome, tr *Tracker, wait time.Duration) {
	final := map[string]string{} // webhook job → final state ("" if not ended)
	plain := map[string]bool{}
	for _, j := range tr.Jobs() {
		j.mu.Lock()
		st := ""
		if j.Final != nil {
			st = j.Final.State
		}
		j.mu.Unlock()
		if j.Spec.Webhook != "" {
			final[j.ID] = st
		} else {
			plain[j.ID] = true
		}
	}
	missing := func() []string {
		r.mu.Lock()
		defer r.mu.Unlock()
		var out []string
		for id, st := range final {
			if st != "" && !completedIn(r.byJob[id], st) {
				out = append(out, id)
			}
		}
		sort.Strings(out)
		return out
	}
	t0 := time.Now()
	_ = waitFor(ctx, wait, "completed webhooks", func() bool { return len(missing()) == 0 })
	waited := time.Since(t0).Round(100 * time.Millisecond)

	r.mu.Lock()
	defer r.mu.Unlock()
	ended, received, dups := 0, 0, 0
	for _, st := range final {
		if st != "" {
			ended++
		}
	}
	for _, n := range r.byID {
		if n > 1 {
			dups += n - 1
		}
	}
	for job, ds := range r.byJob {
		ids := map[string]bool{}
		for _, d := range ds {
			if d.Type != "job.completed" {
				continue
			}
			if _, ok := final[job]; ok {
				received++
			}
			ids[d.ID] = true
			if st, ok := final[job]; ok && st != "" && d.State != st {
				o.Violations = append(o.Violations, fmt.Sprintf("webhook: job %s's completed event %s shows state %q, its record ended %q", job, d.ID, d.State, st))
			}
		}
		if len(ids) > 1 || (len(ids) == 1 && !ids["msg_"+job+"_completed"]) {
			o.Violations = append(o.Violations, fmt.Sprintf("webhook: job %s's completed event came under webhook-id(s) %v, want only msg_%s_completed", job, keys(ids), job))
		}
		if _, ok := final[job]; !ok {
			what := "a job the harness did not submit"
			if plain[job] {
				what = "a job without a webhook"
			}
			o.Violations = append(o.Violations, fmt.Sprintf("webhook: %d delivery(ies) for %s (%s), first %s", len(ds), job, what, ds[0].ID))
		}
	}
	if len(r.bad) > 0 {
		o.Violations = append(o.Violations, fmt.Sprintf("webhook: %d request(s) refused (bad signature or payload), first: %s", len(r.bad), r.bad[0]))
	}
	var miss []string
	for id, st := range final {
		if st != "" && !completedIn(r.byJob[id], st) {
			var seen []string
			for _, d := range r.byJob[id] {
				seen = append(seen, d.ID+"="+d.State)
			}
			miss = append(miss, fmt.Sprintf("%s (ended %s; deliveries seen: %v)", id, st, seen))
		}
	}
	sort.Strings(miss)
	if len(miss) > 0 {
		o.Violations = append(o.Violations, fmt.Sprintf("webhook: %d ended webhook job(s) without a completed event showing their final state after %s: %s",
			len(miss), wait, strings.Join(miss[:min(len(miss), 5)], "; ")))
	}
	o.Notes = append(o.Notes, fmt.Sprintf("webhooks: %d webhook jobs (%d ended), %d completed events received, %d duplicate deliveries by webhook-id, %d refused; all in %s after the drain",
		len(final), ended, received, dups, len(r.bad), waited))
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
