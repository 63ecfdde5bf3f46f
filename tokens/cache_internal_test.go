package tokens

import (
	"errors"
	"testing"
	"time"
)

func TestVerifiedTokenCache(t *testing.T) {
	k, _ := GenerateKey()
	ks, _ := NewKeySet(k)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	v := &Verifier{Keys: ks, Now: clock, CacheSize: 3}
	m := &Minter{Keys: ks, Now: clock}
	tok, _, _ := m.MintJob("j1", "ann", JobScopes, now.Add(time.Hour))

	first, err := v.VerifyJob(tok)
	if err != nil || v.cache.len() != 1 {
		t.Fatalf("first verify: %v, cache %d", err, v.cache.len())
	}
	first.Job = "mutated by a caller"
	second, err := v.VerifyJob(tok)
	if err != nil || second.Job != "j1" {
		t.Fatalf("cached verify: %+v %v (a caller's change leaked into the cache?)", second, err)
	}

	// Failures are never cached.
	if _, err := v.VerifyJob(flip(tok)); err == nil {
		t.Fatal("tampered token verified")
	}
	if v.cache.len() != 1 {
		t.Fatalf("a failure was cached: %d entries", v.cache.len())
	}

	// Bounded.
	for i := range 5 {
		t2, _, _ := m.MintJob("j"+string(rune('a'+i)), "ann", JobScopes, now.Add(time.Hour))
		if _, err := v.VerifyJob(t2); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.cache.len(); n > 3 {
		t.Fatalf("cache holds %d, bound 3", n)
	}

	// Never past exp: a cached token expires like any other.
	short, _, _ := m.MintJob("j2", "ann", JobScopes, now.Add(time.Minute))
	if _, err := v.VerifyJob(short); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if _, err := v.VerifyJob(short); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired cached token: %v", err)
	}

	// A key retired since is refused even for a cached token.
	fresh, _, _ := m.MintJob("j3", "ann", JobScopes, now.Add(time.Hour))
	if _, err := v.VerifyJob(fresh); err != nil {
		t.Fatal(err)
	}
	k2, _ := GenerateKey()
	other, _ := NewKeySet(k2)
	ks.Replace(other)
	if _, err := v.VerifyJob(fresh); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("cached token after its key was retired: %v", err)
	}
}

// flip changes one character well inside the signature, where every bit
// counts (the last characters of base64 carry padding bits).
func flip(tok string) string {
	b := []byte(tok)
	i := len(b) - 10
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}
