package tokens_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/tokens"
)

// FuzzVerifyJob feeds the job-token verifier arbitrary input. It must never
// panic, must refuse with ErrInvalid (never another kind of error), and must
// accept only the one token that was really minted: Ed25519 signatures are
// not malleable and the parser takes canonical base64 only, so no other
// spelling of it verifies. `go test -fuzz FuzzVerifyJob ./tokens/` explores
// further; plain `go test` runs the seeds.
func FuzzVerifyJob(f *testing.F) {
	ks := newSet(f)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	valid, _, err := (&tokens.Minter{Keys: ks, Now: clock}).MintJob("job-1", "ann", tokens.JobScopes, now.Add(time.Hour))
	if err != nil {
		f.Fatal(err)
	}
	head, rest, _ := strings.Cut(valid, ".")
	payload, sig, _ := strings.Cut(rest, ".")
	for _, seed := range []string{
		valid, "", ".", "..", "a.b.c", valid + ".", valid + "=", head + "." + payload + ".",
		head + "=." + payload + "." + sig, head + "." + payload + "." + flipUnusedBit(sig), strings.ToUpper(valid),
		"eyJhbGciOiJub25lIiwidHlwIjoiam9iK2p3dCJ9." + payload + ".",
	} {
		f.Add(seed)
	}
	v := &tokens.Verifier{Keys: ks, Now: clock, CacheSize: -1}
	f.Fuzz(func(t *testing.T, token string) {
		claims, err := v.VerifyJob(token)
		switch {
		case err == nil && token != valid:
			t.Fatalf("accepted a token that was never minted: %q (claims %+v)", token, claims)
		case err == nil && claims.Job != "job-1":
			t.Fatalf("the minted token verified with claims %+v", claims)
		case err != nil && token == valid:
			t.Fatalf("the minted token was refused: %v", err)
		case err != nil && !errors.Is(err, tokens.ErrInvalid):
			t.Fatalf("refusal %v does not wrap ErrInvalid", err)
		}
	})
}

// flipUnusedBit respells a base64url segment whose last character carries
// unused bits (a 64-byte signature is 86 characters: 516 bits for 512) so
// that it decodes to the same bytes unless decoding is strict.
func flipUnusedBit(seg string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, seg[len(seg)-1])
	return seg[:len(seg)-1] + string(alphabet[i^1])
}
