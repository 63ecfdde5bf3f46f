package tokens_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/tokens"
)

// benchToken mints a realistic job token and splits it into the signing
// input and signature that raw ed25519.Verify checks.
func benchToken(b *testing.B) (ks *tokens.KeySet, tok string, msg, sig []byte, pub ed25519.PublicKey) {
	ks = newSet(b)
	tok, _, err := (&tokens.Minter{Keys: ks}).MintJob("019ab3c4-0000-7000-8000-000000000000", "ann", tokens.JobScopes, time.Now().Add(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	i := strings.LastIndexByte(tok, '.')
	sig, err = base64.RawURLEncoding.DecodeString(tok[i+1:])
	if err != nil {
		b.Fatal(err)
	}
	signer, _ := ks.Signer()
	return ks, tok, []byte(tok[:i]), sig, signer.Public
}

// BenchmarkVerifyJob measures full job-token verification beside raw
// ed25519.Verify of the very same signing input and signature, so the ratio
// is the cost of everything but the curve: decoding, header and claim checks.
// Target: ≤ 1.15×.
//
//	go test -run '^$' -bench 'RawEd25519Verify|VerifyJob' -benchtime 2s -count 5 ./tokens/
func BenchmarkVerifyJob(b *testing.B) {
	ks, tok, _, _, _ := benchToken(b)
	v := &tokens.Verifier{Keys: ks, CacheSize: -1} // the signature path, not the cache
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.VerifyJob(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawEd25519Verify(b *testing.B) {
	_, _, msg, sig, pub := benchToken(b)
	b.ReportAllocs()
	for b.Loop() {
		if !ed25519.Verify(pub, msg, sig) {
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
	ks, tok, msg, sig, pub := benchToken(b)
	v := &tokens.Verifier{Keys: ks, CacheSize: -1} // the signature path, not the cache
	var raw, full time.Duration
	for b.Loop() {
		t0 := time.Now()
		if !ed25519.Verify(pub, msg, sig) {
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

// BenchmarkVerifyJobCached is the warm path a polling client takes: the
// token verified once and is found by its hash.
//
//	go test -run '^$' -bench VerifyJobCached ./tokens/
func BenchmarkVerifyJobCached(b *testing.B) {
	ks, tok, _, _, _ := benchToken(b)
	v := &tokens.Verifier{Keys: ks}
	if _, err := v.VerifyJob(tok); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := v.VerifyJob(tok); err != nil {
			b.Fatal(err)
		}
	}
}
