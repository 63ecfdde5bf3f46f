// Command webhook-receiver is a complete claimcheck webhook receiver: it
// verifies every request per Standard Webhooks (asymmetric, v1a) against
// the keys of kind "webhook" in the api's JWKS, refuses stale timestamps
// and repeated webhook-ids, and prints each event. Standard library only.
//
//	go run . -jwks http://127.0.0.1:8080/.well-known/jwks.json -addr 127.0.0.1:9000
package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// tolerance is how far webhook-timestamp may be from this clock.
const tolerance = 5 * time.Minute

// keys are the JWKS's webhook keys by kid, fetched again when none verifies
// (a rotation adds a key), at most once a minute.
type keys struct {
	url     string
	mu      sync.Mutex
	set     map[string]ed25519.PublicKey
	fetched time.Time
}

func (k *keys) load(force bool) (map[string]ed25519.PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.set != nil && (!force || time.Since(k.fetched) < time.Minute) {
		return k.set, nil
	}
	resp, err := http.Get(k.url)
	if err != nil {
		return k.set, err
	}
	defer resp.Body.Close()
	var doc struct {
		Keys []struct{ Kty, Crv, Kid, X, Kind string }
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return k.set, err
	}
	set := map[string]ed25519.PublicKey{}
	for _, j := range doc.Keys {
		raw, err := base64.RawURLEncoding.DecodeString(j.X)
		if j.Kind == "webhook" && j.Kty == "OKP" && j.Crv == "Ed25519" && err == nil && len(raw) == ed25519.PublicKeySize {
			set[j.Kid] = raw
		}
	}
	k.set, k.fetched = set, time.Now()
	return set, nil
}

// verify checks the three headers and the signature over id.timestamp.body.
func (k *keys) verify(h http.Header, body []byte) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook headers")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("bad webhook-timestamp")
	}
	if d := time.Since(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return errors.New("webhook-timestamp outside the tolerance")
	}
	msg := []byte(id + "." + ts + "." + string(body))
	for _, force := range []bool{false, true} {
		set, err := k.load(force)
		if err != nil && set == nil {
			return err
		}
		for _, s := range strings.Fields(sigs) {
			b64, ok := strings.CutPrefix(s, "v1a,")
			sig, err := base64.StdEncoding.DecodeString(b64)
			if !ok || err != nil {
				continue
			}
			for _, pub := range set {
				if ed25519.Verify(pub, msg, sig) {
					return nil
				}
			}
		}
	}
	return errors.New("no v1a signature verifies")
}

func main() {
	jwks := flag.String("jwks", "http://127.0.0.1:8080/.well-known/jwks.json", "the claimcheck api's JWKS URL")
	addr := flag.String("addr", "127.0.0.1:9000", "listen address")
	flag.Parse()
	k := &keys{url: *jwks}
	var mu sync.Mutex
	// webhook-ids handled: a retry of one is acknowledged, not redone. A
	// real receiver keeps them for the retry window (about 2 h) in its
	// database; this map only grows.
	seen := map[string]time.Time{}
	http.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if err := k.verify(r.Header, body); err != nil {
			log.Printf("refused: %v", err)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		id := r.Header.Get("webhook-id")
		mu.Lock()
		_, dup := seen[id]
		seen[id] = time.Now()
		mu.Unlock()
		if dup {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		var p struct {
			Type string
			Data struct {
				Job struct {
					ID, State string
					Progress  struct{ Percent float64 }
				}
				Result *struct{ URL string }
			}
		}
		_ = json.Unmarshal(body, &p)
		line := fmt.Sprintf("verified %s %s %s %.0f%%", p.Type, p.Data.Job.ID, p.Data.Job.State, p.Data.Job.Progress.Percent)
		if p.Data.Result != nil {
			line += " result " + p.Data.Result.URL
		}
		fmt.Println(line)
		w.WriteHeader(http.StatusNoContent)
	})
	log.Printf("listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
