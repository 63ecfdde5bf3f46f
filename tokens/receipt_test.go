package tokens_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/claimcheck/claimcheck/tokens"
)

func hexSum(b string) string { s := sha256.Sum256([]byte(b)); return hex.EncodeToString(s[:]) }

func receiptFacts(now time.Time) tokens.ReceiptFacts {
	return tokens.ReceiptFacts{
		Job: "job-1", Type: "primes", Spec: "sha256:" + hexSum("spec"), InputSHA256: hexSum(`{"n":10}`),
		Result:    tokens.ReceiptResult{SHA256: hexSum("2 3 5 7"), Size: 7, ContentType: "text/plain"},
		StartedAt: now.Add(-1500 * time.Millisecond), FinishedAt: now.Add(-1234567 * time.Microsecond),
		Attempts: 2, Worker: "host-1-abcd",
	}
}

func TestReceiptRoundTrip(t *testing.T) {
	ks := newSet(t)
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	tok, minted, err := (&tokens.ReceiptMinter{Keys: ks, Now: clock}).MintReceipt(receiptFacts(now))
	if err != nil {
		t.Fatal(err)
	}
	got, err := (&tokens.ReceiptVerifier{Keys: ks, Now: clock}).VerifyReceipt(tok)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := ks.Signer()
	if hdr := decodeHeader(t, tok); hdr["typ"] != tokens.TypeReceipt || hdr["alg"] != "EdDSA" || hdr["kid"] != signer.ID || len(hdr) != 3 {
		t.Fatalf("header = %v", hdr)
	}
	f := receiptFacts(now)
	if got.Job != f.Job || got.Type != f.Type || got.Spec != f.Spec || got.InputSHA256 != f.InputSHA256 || got.Result != f.Result ||
		got.Attempts != 2 || got.Worker != f.Worker || got.ID == "" || got.ID != minted.ID ||
		got.Issuer != tokens.DefaultWorkersIssuer || got.Audience != tokens.DefaultReceiptAudience ||
		got.IssuedAt != now.Unix() || got.ExpiresAt != now.Add(tokens.ReceiptLifetime).Unix() {
		t.Fatalf("claims = %+v", got)
	}
	// Times are RFC 3339 UTC, kept to the millisecond.
	if got.StartedAt != "2026-12-01T11:59:58.5Z" || got.FinishedAt != "2026-12-01T11:59:58.765Z" ||
		!got.Finished().Equal(now.Add(-1235*time.Millisecond)) || !got.Started().Equal(f.StartedAt) {
		t.Fatalf("times = %s, %s", got.StartedAt, got.FinishedAt)
	}
	// Still valid nine years on: a receipt outlives everything else.
	later := &tokens.ReceiptVerifier{Keys: ks, Now: func() time.Time { return now.Add(9 * 365 * 24 * time.Hour) }}
	if _, err := later.VerifyReceipt(tok); err != nil {
		t.Fatalf("nine years on: %v", err)
	}
}

// TestReceiptRefusals: every flaw is ErrInvalid with its own reason, and
// the kinds never cross: a job key cannot sign a receipt, a receipt is not
// a job token and the other way round.
func TestReceiptRefusals(t *testing.T) {
	receiptKeys, jobKeys := newSet(t), newSet(t)
	now := time.Now()
	// The verifier's keys come from one JWKS that lists both sets, as the
	// api publishes it, read for the receipt kind only.
	doc, _ := json.Marshal(tokens.MergeJWKS(jobKeys.JWKSAs(tokens.KindJob), receiptKeys.JWKSAs(tokens.KindReceipt)))
	known, err := tokens.ParseJWKSOf(doc, tokens.KindReceipt)
	if err != nil {
		t.Fatal(err)
	}
	v := &tokens.ReceiptVerifier{Keys: known}
	valid, _, err := (&tokens.ReceiptMinter{Keys: receiptKeys}).MintReceipt(receiptFacts(now))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyReceipt(valid); err != nil {
		t.Fatalf("baseline refused: %v", err)
	}
	byJobKey, _, err := (&tokens.ReceiptMinter{Keys: jobKeys}).MintReceipt(receiptFacts(now))
	if err != nil {
		t.Fatal(err)
	}
	jobToken, _, _ := (&tokens.Minter{Keys: receiptKeys}).MintJob("job-1", "ann", tokens.JobScopes, now.Add(time.Hour))
	parts := strings.Split(valid, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := func(from, to string) string {
		p := strings.Replace(string(payload), from, to, 1)
		if p == string(payload) {
			t.Fatalf("%q not in the payload", from)
		}
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(p)) + "." + parts[2]
	}
	signer, _ := receiptKeys.Signer()
	signed := func(typ string, mod func(m jwt.MapClaims)) string {
		var m jwt.MapClaims
		json.Unmarshal(payload, &m)
		mod(m)
		tk := jwt.NewWithClaims(jwt.SigningMethodEdDSA, m)
		tk.Header["typ"], tk.Header["kid"] = typ, signer.ID
		s, err := tk.SignedString(signer.Private)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		name   string
		token  string
		v      *tokens.ReceiptVerifier
		reason error
	}{
		{"signed by a job key", byJobKey, v, tokens.ErrUnknownKey},
		{"a job token", jobToken, v, tokens.ErrWrongType},
		{"wrong typ", signed("jwt", func(jwt.MapClaims) {}), v, tokens.ErrWrongType},
		{"typ of a link", signed(tokens.TypeLink, func(jwt.MapClaims) {}), v, tokens.ErrWrongType},
		{"tampered size", tampered(`"size":7`, `"size":8`), v, tokens.ErrSignature},
		{"tampered result digest", tampered(hexSum("2 3 5 7"), hexSum("2 3 5 9")), v, tokens.ErrSignature},
		{"tampered job", tampered(`"job":"job-1"`, `"job":"job-2"`), v, tokens.ErrSignature},
		{"expired", valid, &tokens.ReceiptVerifier{Keys: known, Now: func() time.Time { return now.Add(tokens.ReceiptLifetime + time.Hour) }}, tokens.ErrExpired},
		{"no exp", signed(tokens.TypeReceipt, func(m jwt.MapClaims) { delete(m, "exp") }), v, tokens.ErrMalformed},
		{"lifetime over the cap", signed(tokens.TypeReceipt, func(m jwt.MapClaims) { m["exp"] = now.Add(tokens.ReceiptLifetime + 48*time.Hour).Unix() }), v, tokens.ErrMalformed},
		{"wrong issuer", signed(tokens.TypeReceipt, func(m jwt.MapClaims) { m["iss"] = tokens.DefaultAPIIssuer }), v, tokens.ErrWrongIssuer},
		{"wrong audience", signed(tokens.TypeReceipt, func(m jwt.MapClaims) { m["aud"] = tokens.DefaultProgressAudience }), v, tokens.ErrWrongAudience},
		{"no result digest", signed(tokens.TypeReceipt, func(m jwt.MapClaims) { m["result"] = map[string]any{"size": 7} }), v, tokens.ErrMalformed},
		{"no input digest", signed(tokens.TypeReceipt, func(m jwt.MapClaims) { delete(m, "input_sha256") }), v, tokens.ErrMalformed},
		{"no worker", signed(tokens.TypeReceipt, func(m jwt.MapClaims) { delete(m, "worker") }), v, tokens.ErrMalformed},
		{"finished before started", signed(tokens.TypeReceipt, func(m jwt.MapClaims) { m["finished_at"] = "2000-01-01T00:00:00Z" }), v, tokens.ErrMalformed},
		{"uppercase digest", signed(tokens.TypeReceipt, func(m jwt.MapClaims) { m["input_sha256"] = strings.ToUpper(hexSum("x")) }), v, tokens.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.v.VerifyReceipt(tc.token)
			if c != nil || !errors.Is(err, tokens.ErrInvalid) || !errors.Is(err, tc.reason) {
				t.Fatalf("VerifyReceipt = %+v, %v; want %v", c, err, tc.reason)
			}
		})
	}
	// And a receipt is never a job token, even with the same key.
	if _, err := (&tokens.Verifier{Keys: receiptKeys}).VerifyJob(valid); !errors.Is(err, tokens.ErrWrongType) {
		t.Fatalf("receipt as a job token: %v", err)
	}
}

func TestMintReceiptRefusals(t *testing.T) {
	ks := newSet(t)
	now := time.Now()
	for name, mod := range map[string]func(f *tokens.ReceiptFacts){
		"no job":         func(f *tokens.ReceiptFacts) { f.Job = "" },
		"no spec":        func(f *tokens.ReceiptFacts) { f.Spec = "" },
		"short digest":   func(f *tokens.ReceiptFacts) { f.Result.SHA256 = "abc" },
		"zero attempts":  func(f *tokens.ReceiptFacts) { f.Attempts = 0 },
		"negative size":  func(f *tokens.ReceiptFacts) { f.Result.Size = -1 },
		"ends too early": func(f *tokens.ReceiptFacts) { f.FinishedAt = f.StartedAt.Add(-time.Second) },
	} {
		f := receiptFacts(now)
		mod(&f)
		if tok, _, err := (&tokens.ReceiptMinter{Keys: ks}).MintReceipt(f); err == nil {
			t.Errorf("%s: minted %s", name, tok)
		}
	}
}

// TestParseReceiptJWKS: only keys tagged "receipt" are read; an untagged
// key, which ParseJWKSOf would take for every kind's, is not.
func TestParseReceiptJWKS(t *testing.T) {
	receiptKeys, jobKeys, untagged := newSet(t), newSet(t), newSet(t)
	doc, _ := json.Marshal(tokens.MergeJWKS(jobKeys.JWKSAs(tokens.KindJob), receiptKeys.JWKSAs(tokens.KindReceipt), untagged.JWKS()))
	ks, err := tokens.ParseReceiptJWKS(doc)
	if err != nil {
		t.Fatal(err)
	}
	if got := ks.KIDs(); len(got) != 1 || got[0] != receiptKeys.KIDs()[0] {
		t.Fatalf("kids = %v, want only the receipt key", got)
	}
	onlyOthers, _ := json.Marshal(tokens.MergeJWKS(jobKeys.JWKSAs(tokens.KindJob), untagged.JWKS()))
	if _, err := tokens.ParseReceiptJWKS(onlyOthers); err == nil {
		t.Fatal("a document without receipt keys gave a key set")
	}
}
