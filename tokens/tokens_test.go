package tokens_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/tokens/tokenstest"
)

func newSet(t testing.TB) *tokens.KeySet {
	return tokenstest.NewKeySet(t)
}

func TestMintVerifyRoundTrip(t *testing.T) {
	ks := newSet(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	m := &tokens.Minter{Keys: ks, Now: clock}
	tok, minted, err := m.MintJob("job-1", "ann", []string{tokens.ScopeJobRead, tokens.ScopeJobRead, tokens.ScopeJobResult}, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	got, err := (&tokens.Verifier{Keys: ks, Now: clock}).VerifyJob(tok)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := ks.Signer()
	if got.Job != "job-1" || got.Subject != "ann" || got.Scope != "job:read job:result" || got.ID == "" || got.ID != minted.ID ||
		got.Issuer != tokens.DefaultAPIIssuer || got.Audience != tokens.DefaultProgressAudience ||
		!got.Expires().Equal(now.Add(time.Hour)) || got.IssuedAt != now.Unix() || got.NotBefore != now.Unix() {
		t.Fatalf("claims = %+v", got)
	}
	hdr := decodeHeader(t, tok)
	if hdr["alg"] != "EdDSA" || hdr["typ"] != tokens.TypeJob || hdr["kid"] != signer.ID || len(hdr) != 3 {
		t.Fatalf("header = %v", hdr)
	}
	// Fresh jti every time.
	tok2, _, _ := m.MintJob("job-1", "ann", tokens.JobScopes, now.Add(time.Hour))
	c2, _ := (&tokens.Verifier{Keys: ks, Now: clock}).VerifyJob(tok2)
	if c2.ID == got.ID {
		t.Fatal("two tokens share a jti")
	}
	// Leeway: 20s past exp still verifies, 40s past does not.
	for _, tc := range []struct {
		after time.Duration
		ok    bool
	}{{time.Hour + 20*time.Second, true}, {time.Hour + 40*time.Second, false}} {
		v := &tokens.Verifier{Keys: ks, Now: func() time.Time { return now.Add(tc.after) }}
		if _, err := v.VerifyJob(tok); (err == nil) != tc.ok {
			t.Errorf("at exp%+v: %v", tc.after-time.Hour, err)
		}
	}
}

func decodeHeader(t *testing.T, tok string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	json.Unmarshal(raw, &h)
	return h
}

func TestForgedTokensAreRefused(t *testing.T) {
	ks := newSet(t)
	now := time.Now()
	valid, _, err := (&tokens.Minter{Keys: ks}).MintJob("job-1", "ann", tokens.JobScopes, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	v := &tokens.Verifier{Keys: ks}
	// The forge's own unmodified output verifies, so each refusal below
	// comes from its one change.
	if _, err := v.VerifyJob(tokenstest.Valid(t, ks, "job-1", now, nil)); err != nil {
		t.Fatalf("baseline forgery refused: %v", err)
	}
	for _, f := range tokenstest.JobTokens(t, ks, "job-1", valid, now) {
		t.Run(f.Name, func(t *testing.T) {
			claims, err := v.VerifyJob(f.Token)
			if claims != nil || !errors.Is(err, tokens.ErrInvalid) || errors.Is(err, tokens.ErrForbidden) {
				t.Fatalf("VerifyJob = %v, %v", claims, err)
			}
			if f.Reason != nil && !errors.Is(err, f.Reason) {
				t.Fatalf("reason = %v, want %v", err, f.Reason)
			}
			if len(f.Token) > 20 && strings.Contains(err.Error(), f.Token[:20]) {
				t.Fatal("error text contains the token")
			}
		})
	}
}

func TestAuthorize(t *testing.T) {
	c := &tokens.JobClaims{Job: "a", Scope: "job:read job:result"}
	if err := c.Authorize("a", tokens.ScopeJobRead); err != nil {
		t.Fatal(err)
	}
	if err := c.Authorize("b", tokens.ScopeJobRead); !errors.Is(err, tokens.ErrWrongJob) || !errors.Is(err, tokens.ErrForbidden) || errors.Is(err, tokens.ErrInvalid) {
		t.Fatalf("wrong job: %v", err)
	}
	err := c.Authorize("a", tokens.ScopeJobCancel)
	var se *tokens.ScopeError
	if !errors.As(err, &se) || se.Need != tokens.ScopeJobCancel || !errors.Is(err, tokens.ErrForbidden) {
		t.Fatalf("missing scope: %v", err)
	}
}

func TestMintRefusals(t *testing.T) {
	ks := newSet(t)
	m := &tokens.Minter{Keys: ks}
	future := time.Now().Add(time.Hour)
	for name, call := range map[string]func() error{
		"no scope":      func() error { _, _, err := m.MintJob("j", "u", nil, future); return err },
		"unknown scope": func() error { _, _, err := m.MintJob("j", "u", []string{"admin"}, future); return err },
		"past expiry": func() error {
			_, _, err := m.MintJob("j", "u", tokens.JobScopes, time.Now().Add(-time.Minute))
			return err
		},
		"no job": func() error { _, _, err := m.MintJob("", "u", tokens.JobScopes, future); return err },
		"verify-only set": func() error {
			k, _ := tokens.GenerateKey()
			vs, _ := tokens.NewKeySet(nil, &tokens.Key{ID: k.ID, Public: k.Public})
			_, _, err := (&tokens.Minter{Keys: vs}).MintJob("j", "u", tokens.JobScopes, future)
			return err
		},
	} {
		if call() == nil {
			t.Errorf("%s: minted", name)
		}
	}
}

func TestThumbprintRFC8037(t *testing.T) {
	// RFC 8037 appendix A.2/A.3.
	x, _ := base64.RawURLEncoding.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	if got := tokens.Thumbprint(ed25519.PublicKey(x)); got != "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k" {
		t.Fatalf("thumbprint = %s", got)
	}
	k, _ := tokens.GenerateKey()
	if k.ID != tokens.Thumbprint(k.Public) {
		t.Fatal("generated kid is not the thumbprint")
	}
}

func TestKeyDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	first, _ := tokens.GenerateKey()
	if err := tokens.WriteKey(dir, first, true); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, first.ID+".pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v %v", fi.Mode(), err)
	}
	ks, err := tokens.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := ks.Signer(); s.ID != first.ID {
		t.Fatalf("signer %s, want %s", s.ID, first.ID)
	}
	oldTok, _, _ := (&tokens.Minter{Keys: ks}).MintJob("j", "u", tokens.JobScopes, time.Now().Add(time.Hour))

	// Rotation: a second key becomes active; the first still verifies.
	second, _ := tokens.GenerateKey()
	if err := tokens.WriteKey(dir, second, true); err != nil {
		t.Fatal(err)
	}
	ks, err = tokens.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := ks.Signer(); s.ID != second.ID || len(ks.KIDs()) != 2 {
		t.Fatalf("after rotation: signer %s, kids %v", s.ID, ks.KIDs())
	}
	newTok, _, _ := (&tokens.Minter{Keys: ks}).MintJob("j", "u", tokens.JobScopes, time.Now().Add(time.Hour))
	for _, tok := range []string{oldTok, newTok} {
		if _, err := (&tokens.Verifier{Keys: ks}).VerifyJob(tok); err != nil {
			t.Fatalf("verify after rotation: %v", err)
		}
	}

	// A verify-only copy (public files only) verifies but cannot sign.
	pubDir := t.TempDir()
	for _, k := range []*tokens.Key{first, second} {
		tokens.WriteKey(pubDir, &tokens.Key{ID: k.ID, Public: k.Public}, false)
	}
	vs, err := tokens.LoadDir(pubDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vs.Signer(); err == nil {
		t.Fatal("verify-only set can sign")
	}
	if _, err := (&tokens.Verifier{Keys: vs}).VerifyJob(newTok); err != nil {
		t.Fatal(err)
	}

	// Refusals: a world-readable private key, a file named for another kid.
	os.Chmod(filepath.Join(dir, first.ID+".pem"), 0o644)
	if _, err := tokens.LoadDir(dir); err == nil || !strings.Contains(err.Error(), "readable") {
		t.Fatalf("loaded a 0644 private key: %v", err)
	}
	os.Chmod(filepath.Join(dir, first.ID+".pem"), 0o600)
	os.Rename(filepath.Join(dir, first.ID+".pem"), filepath.Join(dir, "AAAA.pem"))
	if _, err := tokens.LoadDir(dir); err == nil {
		t.Fatal("loaded a key whose file name is not its kid")
	}
}

func TestEnsureDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "k")
	ks, created, err := tokens.EnsureDir(dir)
	if err != nil || !created {
		t.Fatalf("first EnsureDir: %v %v", created, err)
	}
	again, created, err := tokens.EnsureDir(dir)
	if err != nil || created || again.KIDs()[0] != ks.KIDs()[0] {
		t.Fatalf("second EnsureDir: %v %v %v", created, err, again.KIDs())
	}
}

// TestEnsureDirReplicasAgree: replicas starting at once on one empty key
// directory (a shared volume) end up with one key, which all of them sign
// with.
func TestEnsureDirReplicasAgree(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "k")
	const n = 8
	kids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ks, _, err := tokens.EnsureDir(dir)
			if err == nil {
				var k *tokens.Key
				if k, err = ks.Signer(); err == nil {
					kids[i] = k.ID
				}
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || kids[i] != kids[0] {
			t.Fatalf("replica %d: kid %q, err %v; replica 0: %q", i, kids[i], errs[i], kids[0])
		}
	}
	if ks, err := tokens.LoadDir(dir); err != nil || len(ks.KIDs()) != 1 {
		t.Fatalf("the directory holds %v (%v), want one key", ks.KIDs(), err)
	}
}

func TestJWKS(t *testing.T) {
	ks := newSet(t)
	raw, _ := json.Marshal(ks.JWKS())
	if strings.Contains(string(raw), `"d"`) {
		t.Fatalf("jwks leaks private key: %s", raw)
	}
	parsed, err := tokens.ParseJWKS(raw)
	if err != nil || parsed.KIDs()[0] != ks.KIDs()[0] {
		t.Fatalf("round trip: %v %v", err, parsed)
	}
	// Other key types are skipped, a lying kid is refused.
	mixed := `{"keys":[{"kty":"RSA","n":"x","e":"AQAB","kid":"r"},` + strings.TrimPrefix(string(raw), `{"keys":[`)
	if p, err := tokens.ParseJWKS([]byte(mixed)); err != nil || len(p.KIDs()) != 1 {
		t.Fatalf("mixed jwks: %v", err)
	}
	lying := strings.Replace(string(raw), ks.KIDs()[0], "chosen-by-attacker", 1)
	if _, err := tokens.ParseJWKS([]byte(lying)); err == nil {
		t.Fatal("accepted a kid that is not the thumbprint")
	}
}

func TestRemoteKeys(t *testing.T) {
	var mu sync.Mutex
	current := newSet(t)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		mu.Lock()
		defer mu.Unlock()
		json.NewEncoder(w).Encode(current.JWKS())
	}))
	defer srv.Close()
	rk, err := tokens.NewRemoteKeys(t.Context(), srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rk.Now = func() time.Time { return now }
	oldKid := current.KIDs()[0]
	for range 5 {
		if _, err := rk.PublicKey(oldKid); err != nil {
			t.Fatal(err)
		}
	}
	if hits.Load() != 1 {
		t.Fatalf("known kid caused %d fetches", hits.Load())
	}
	// The api rotates: the new kid is found by one refetch...
	mu.Lock()
	current = newSet(t)
	mu.Unlock()
	now = now.Add(time.Minute)
	if _, err := rk.PublicKey(current.KIDs()[0]); err != nil || hits.Load() != 2 {
		t.Fatalf("new kid: %v, hits %d", err, hits.Load())
	}
	// ...and a burst of made-up kids within the interval costs nothing.
	for range 10 {
		if _, err := rk.PublicKey("made-up"); !errors.Is(err, tokens.ErrUnknownKey) {
			t.Fatalf("made-up kid: %v", err)
		}
	}
	if hits.Load() != 2 {
		t.Fatalf("unknown kids caused %d fetches", hits.Load()-2)
	}
	now = now.Add(31 * time.Second)
	rk.PublicKey("made-up")
	if hits.Load() != 3 {
		t.Fatalf("after the interval: %d fetches", hits.Load())
	}
	// A failing server leaves the known keys in use.
	srv.Close()
	now = now.Add(10 * time.Minute)
	if _, err := rk.PublicKey(current.KIDs()[0]); err != nil {
		t.Fatalf("stale keys dropped on fetch failure: %v", err)
	}
}

// The verifier checks the issuer and audience it is configured with, not
// fixed strings.
func TestVerifierUsesConfiguredIssuerAndAudience(t *testing.T) {
	ks := newSet(t)
	m := &tokens.Minter{Keys: ks, Issuer: "urn:a", Audience: "urn:b"}
	tok, _, _ := m.MintJob("j", "u", tokens.JobScopes, time.Now().Add(time.Hour))
	if _, err := (&tokens.Verifier{Keys: ks}).VerifyJob(tok); !errors.Is(err, tokens.ErrWrongIssuer) && !errors.Is(err, tokens.ErrWrongAudience) {
		t.Fatalf("default verifier accepted custom iss/aud: %v", err)
	}
	if _, err := (&tokens.Verifier{Keys: ks, Issuer: "urn:a", Audience: "urn:b"}).VerifyJob(tok); err != nil {
		t.Fatal(err)
	}
}

// TestJWKSKinds: one document holds keys of several kinds (the api's),
// and each verifier takes only its own kind, so a worker's receipt key can
// never be taken for a job-token key by the progress service.
func TestJWKSKinds(t *testing.T) {
	jobs, receipts := newSet(t), newSet(t)
	doc := tokens.MergeJWKS(jobs.JWKSAs(tokens.KindJob), receipts.JWKSAs(tokens.KindReceipt))
	raw, _ := json.Marshal(doc)
	if !strings.Contains(string(raw), `"kind":"receipt"`) {
		t.Fatalf("JWKS %s does not tag its keys", raw)
	}
	forJobs, err := tokens.ParseJWKS(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := forJobs.KIDs(); len(got) != 1 || got[0] != jobs.KIDs()[0] {
		t.Fatalf("job keys from the merged document: %v, want only %v", got, jobs.KIDs())
	}
	forReceipts, err := tokens.ParseJWKSOf(raw, tokens.KindReceipt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := forReceipts.PublicKey(jobs.KIDs()[0]); !errors.Is(err, tokens.ErrUnknownKey) {
		t.Fatalf("a job key among receipt keys: %v", err)
	}
	if _, err := tokens.ParseJWKSOf(raw, tokens.KindWebhook); err == nil {
		t.Fatal("a document with no webhook key gave a webhook key set")
	}
	// A document from before kinds (no member) still serves its one kind.
	legacy, _ := json.Marshal(jobs.JWKS())
	if _, err := tokens.ParseJWKSOf(legacy, tokens.KindAccess); err != nil {
		t.Fatalf("untagged document: %v", err)
	}

	// A remote source of one kind never uses another's keys.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(raw) }))
	defer srv.Close()
	rk, err := tokens.NewRemoteKeysOf(t.Context(), srv.URL, tokens.KindReceipt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rk.PublicKey(receipts.KIDs()[0]); err != nil {
		t.Fatalf("receipt key: %v", err)
	}
	if _, err := rk.PublicKey(jobs.KIDs()[0]); !errors.Is(err, tokens.ErrUnknownKey) {
		t.Fatalf("job key from a receipt source: %v, want ErrUnknownKey", err)
	}

	// AnyKey looks in each source and says unknown only when all do.
	anyKey := tokens.AnyKey{jobs, receipts}
	if _, err := anyKey.PublicKey(receipts.KIDs()[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := anyKey.PublicKey("nope"); !errors.Is(err, tokens.ErrUnknownKey) {
		t.Fatalf("AnyKey unknown kid: %v", err)
	}
}
