package tokens_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/tokens"
)

// BenchmarkVerifyJob measures full job-token verification beside raw
// ed25519.Verify of the very same signing input and signature, so the ratio
// is the cost of everything but the curve: decoding, header and claim checks.
// Target: ≤ 1.15×.
//
//	go test -run '^$' -bench 'RawEd25519Verify|VerifyJob' -benchtime 2s -count 5 ./tokens/
func BenchmarkVerifyJob(b *testing.B) {
	ks := newSet(b)
	tok, _, err := (&tokens.Minter{Keys: ks}).MintJob("019ab3c4-0000-7000-8000-000000000000", "ann", tokens.JobScopes, time.Now().Add(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	v := &tokens.Verifier{Keys: ks}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.VerifyJob(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawEd25519Verify(b *testing.B) {
	ks := newSet(b)
	tok, _, _ := (&tokens.Minter{Keys: ks}).MintJob("019ab3c4-0000-7000-8000-000000000000", "ann", tokens.JobScopes, time.Now().Add(time.Hour))
	i := strings.LastIndexByte(tok, '.')
	msg := []byte(tok[:i])
	sig, _ := base64.RawURLEncoding.DecodeString(tok[i+1:])
	signer, _ := ks.Signer()
	b.ReportAllocs()
	for b.Loop() {
		if !ed25519.Verify(signer.Public, msg, sig) {
			b.Fatal("bad signature")
		}
	}
}

// BenchmarkVerifyJobRatio interleaves raw ed25519.Verify and VerifyJob on
// the same token in one loop and reports their ratio, so frequency changes
// and neighbours' load hit both sides alike.
//
//	go test -run '^$' -bench VerifyJobRatio -benchtime 20000x -count 5 ./tokens/
func BenchmarkVerifyJobRatio(b *testing.B) {
	ks := newSet(b)
	tok, _, _ := (&tokens.Minter{Keys: ks}).MintJob("019ab3c4-0000-7000-8000-000000000000", "ann", tokens.JobScopes, time.Now().Add(time.Hour))
	i := strings.LastIndexByte(tok, '.')
	msg := []byte(tok[:i])
	sig, _ := base64.RawURLEncoding.DecodeString(tok[i+1:])
	signer, _ := ks.Signer()
	v := &tokens.Verifier{Keys: ks}
	var raw, full time.Duration
	for b.Loop() {
		t0 := time.Now()
		if !ed25519.Verify(signer.Public, msg, sig) {
			b.Fatal("bad signature")
		}
		t1 := time.Now()
		if _, err := v.VerifyJob(tok); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		raw += t1.Sub(t0)
		full += t2.Sub(t1)
	}
	b.ReportMetric(float64(raw.Nanoseconds())/float64(b.N), "raw-ns/op")
	b.ReportMetric(float64(full.Nanoseconds())/float64(b.N), "verify-ns/op")
	b.ReportMetric(float64(full)/float64(raw), "ratio")
}

// BenchmarkMintJob is for information: minting is one Ed25519 signature.
func BenchmarkMintJob(b *testing.B) {
	m := &tokens.Minter{Keys: newSet(b)}
	exp := time.Now().Add(time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := m.MintJob("019ab3c4-0000-7000-8000-000000000000", "ann", tokens.JobScopes, exp); err != nil {
			b.Fatal(err)
		}
	}
}
