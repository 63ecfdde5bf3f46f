package tokens_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/claimcheck/claimcheck/tokens"
)

// signRaw signs arbitrary claims with ks's active key, as a holder of the
// gateway's key could, to reach checks behind the signature.
func signRaw(t *testing.T, ks *tokens.KeySet, typ string, claims jwt.MapClaims) string {
	t.Helper()
	k, _ := ks.Signer()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["typ"], tok.Header["kid"] = typ, k.ID
	s, err := tok.SignedString(k.Private)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAccessTokenRoundTripAndTypeSeparation(t *testing.T) {
	ks := newSet(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	m := &tokens.AccessMinter{Keys: ks, Now: clock, Lifetime: time.Hour} // clamped to 60s
	tok, c, err := m.MintAccess("ann", "sess-1", []string{"jobs:submit", "jobs:read"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Expires().Sub(now) != tokens.MaxAccessLifetime || c.ClientID != tokens.DefaultGatewayClientID {
		t.Fatalf("claims %+v", c)
	}
	v := &tokens.AccessVerifier{Keys: ks, Now: clock}
	got, err := v.VerifyAccess(tok)
	if err != nil || got.Subject != "ann" || got.SessionID != "sess-1" || !got.HasScope("jobs:read") || got.ID == "" {
		t.Fatalf("verify: %+v %v", got, err)
	}
	hdr := header(t, tok)
	k, _ := ks.Signer()
	if hdr["typ"] != "at+jwt" || hdr["kid"] != k.ID || hdr["alg"] != "EdDSA" {
		t.Fatalf("header %v", hdr)
	}

	// A job token is not an internal token, and the other way round.
	job, _, _ := (&tokens.Minter{Keys: ks, Now: clock}).MintJob("j", "ann", tokens.JobScopes, now.Add(time.Hour))
	if _, err := v.VerifyAccess(job); !errors.Is(err, tokens.ErrWrongType) {
		t.Fatalf("job token as access token: %v", err)
	}
	if _, err := (&tokens.Verifier{Keys: ks, Now: clock}).VerifyJob(tok); !errors.Is(err, tokens.ErrWrongType) {
		t.Fatalf("access token as job token: %v", err)
	}
}

func TestAccessTokenRefusals(t *testing.T) {
	ks, other := newSet(t), newSet(t)
	now := time.Now().Truncate(time.Second)
	v := &tokens.AccessVerifier{Keys: ks}
	base := func() jwt.MapClaims {
		return jwt.MapClaims{"iss": tokens.DefaultGatewayIssuer, "aud": tokens.DefaultServicesAudience, "sub": "ann",
			"jti": "x", "client_id": "c", "scope": "jobs:read", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}
	}
	with := func(k string, val any) jwt.MapClaims { c := base(); c[k] = val; return c }
	without := func(k string) jwt.MapClaims { c := base(); delete(c, k); return c }
	good := signRaw(t, ks, "at+jwt", base())
	if _, err := v.VerifyAccess(good); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	otherTok, _, _ := (&tokens.AccessMinter{Keys: other}).MintAccess("ann", "", nil)
	for name, tc := range map[string]struct {
		tok  string
		want error
	}{
		"lifetime over 60s": {signRaw(t, ks, "at+jwt", with("exp", now.Add(2*time.Minute).Unix())), tokens.ErrMalformed},
		"expired":           {signRaw(t, ks, "at+jwt", with("exp", now.Add(-time.Hour).Unix())), tokens.ErrExpired},
		"no exp":            {signRaw(t, ks, "at+jwt", without("exp")), tokens.ErrMalformed},
		"no sub":            {signRaw(t, ks, "at+jwt", without("sub")), tokens.ErrMalformed},
		"no jti":            {signRaw(t, ks, "at+jwt", without("jti")), tokens.ErrMalformed},
		"wrong issuer":      {signRaw(t, ks, "at+jwt", with("iss", tokens.DefaultAPIIssuer)), tokens.ErrWrongIssuer},
		"wrong audience":    {signRaw(t, ks, "at+jwt", with("aud", tokens.DefaultProgressAudience)), tokens.ErrWrongAudience},
		"wrong typ":         {signRaw(t, ks, "JWT", base()), tokens.ErrWrongType},
		"unknown kid":       {otherTok, tokens.ErrUnknownKey},
		"tampered payload":  {tamper(good), tokens.ErrSignature},
		"alg none":          {noneToken(t, base()), tokens.ErrInvalid},
	} {
		_, err := v.VerifyAccess(tc.tok)
		if !errors.Is(err, tc.want) || !errors.Is(err, tokens.ErrInvalid) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

// tamper re-signs nothing: it swaps the subject, so the signature no
// longer matches the payload.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(b), `"ann"`, `"bob"`, 1)))
	return strings.Join(parts, ".")
}

func noneToken(t *testing.T, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodNone, c)
	tok.Header["typ"] = "at+jwt"
	s, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRotateVerifyRetire(t *testing.T) {
	dir := t.TempDir()
	first, prev, err := tokens.RotateDir(dir)
	if err != nil || prev != "" {
		t.Fatalf("first rotate: %v %q", err, prev)
	}
	ks, err := tokens.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	jm, am := &tokens.Minter{Keys: ks}, &tokens.AccessMinter{Keys: ks}
	jv, av := &tokens.Verifier{Keys: ks}, &tokens.AccessVerifier{Keys: ks}
	oldJob, _, _ := jm.MintJob("j", "ann", tokens.JobScopes, time.Now().Add(time.Hour))
	oldAccess, _, _ := am.MintAccess("ann", "", nil)

	second, prev, err := tokens.RotateDir(dir)
	if err != nil || prev != first.ID {
		t.Fatalf("second rotate: %v, previous %q want %q", err, prev, first.ID)
	}
	// Processes holding the set see the change once it is reloaded, while
	// others read it concurrently.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					_, _ = ks.PublicKey(first.ID)
					_, _ = ks.Signer()
					_ = ks.JWKS()
				}
			}
		}()
	}
	if err := tokens.ReloadDir(ks, dir); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()

	newJob, _, _ := jm.MintJob("j", "ann", tokens.JobScopes, time.Now().Add(time.Hour))
	newAccess, _, _ := am.MintAccess("ann", "", nil)
	if header(t, newJob)["kid"] != second.ID || header(t, newAccess)["kid"] != second.ID {
		t.Fatal("new tokens do not carry the new kid")
	}
	for _, check := range []error{
		func() error { _, err := jv.VerifyJob(oldJob); return err }(),
		func() error { _, err := av.VerifyAccess(oldAccess); return err }(),
		func() error { _, err := jv.VerifyJob(newJob); return err }(),
	} {
		if check != nil {
			t.Fatalf("after rotation: %v", check)
		}
	}
	if len(ks.JWKS().Keys) != 2 {
		t.Fatalf("JWKS serves %d keys, want old and new", len(ks.JWKS().Keys))
	}

	if err := tokens.RetireKey(dir, second.ID); !errors.Is(err, tokens.ErrActiveKey) {
		t.Fatalf("retiring the active key: %v", err)
	}
	for _, bad := range []string{"../" + first.ID, "", "a/b", strings.Repeat("A", 43) + "/"} {
		if err := tokens.RetireKey(dir, bad); err == nil {
			t.Fatalf("retired %q", bad)
		}
	}
	if err := tokens.RetireKey(dir, first.ID); err != nil {
		t.Fatal(err)
	}
	if err := tokens.ReloadDir(ks, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := jv.VerifyJob(oldJob); !errors.Is(err, tokens.ErrUnknownKey) {
		t.Fatalf("old-kid job token after retire: %v", err)
	}
	if _, err := av.VerifyAccess(oldAccess); !errors.Is(err, tokens.ErrUnknownKey) {
		t.Fatalf("old-kid access token after retire: %v", err)
	}
	if _, err := jv.VerifyJob(newJob); err != nil {
		t.Fatalf("new token after retire: %v", err)
	}
}

func header(t *testing.T, tok string) map[string]any {
	t.Helper()
	h, _, _ := strings.Cut(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLinkTokens(t *testing.T) {
	ks := newSet(t)
	now := time.Now().Truncate(time.Second)
	m := &tokens.LinkMinter{Keys: ks}
	v := &tokens.LinkVerifier{Keys: ks}
	link, c, err := m.MintLink("j1", 2, "out.png", "inline", 0)
	if err != nil || c.Expires().Sub(now) < tokens.DefaultLinkLifetime-time.Second {
		t.Fatalf("mint: %v %+v", err, c)
	}
	got, err := v.VerifyLink(link)
	if err != nil || got.Job != "j1" || got.Epoch != 2 || got.Filename != "out.png" || got.Scope != tokens.ScopeResultDownload {
		t.Fatalf("verify: %+v %v", got, err)
	}
	if _, _, err := m.MintLink("j1", 0, "", "", 25*time.Hour); err == nil {
		t.Fatal("minted a link over 24 h")
	}
	if got.Once {
		t.Fatal("MintLink made a one-time link")
	}
	once, oc, err := m.Mint("j1", 2, tokens.LinkOptions{TTL: time.Minute, NotAfter: now.Add(30 * time.Second), Once: true})
	if err != nil || !oc.Once || oc.Expires().After(now.Add(30*time.Second)) {
		t.Fatalf("mint once: %v %+v", err, oc)
	}
	if got, err := v.VerifyLink(once); err != nil || !got.Once || got.ID == "" || got.ID != oc.ID {
		t.Fatalf("verify once: %+v %v", got, err)
	}
	noJTI := signRaw(t, ks, "link+jwt", jwt.MapClaims{"iss": tokens.DefaultProgressIssuer, "aud": tokens.DefaultResultsAudience,
		"job": "j1", "scope": tokens.ScopeResultDownload, "once": true, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()})
	if _, err := v.VerifyLink(noJTI); !errors.Is(err, tokens.ErrMalformed) {
		t.Fatalf("one-time link without a jti: %v", err)
	}
	job, _, _ := (&tokens.Minter{Keys: ks}).MintJob("j1", "ann", tokens.JobScopes, now.Add(time.Hour))
	if _, err := v.VerifyLink(job); !errors.Is(err, tokens.ErrWrongType) {
		t.Fatalf("job token as a link: %v", err)
	}
	if _, err := (&tokens.Verifier{Keys: ks}).VerifyJob(link); !errors.Is(err, tokens.ErrWrongType) {
		t.Fatalf("link as a job token: %v", err)
	}
	long := signRaw(t, ks, "link+jwt", jwt.MapClaims{"iss": tokens.DefaultProgressIssuer, "aud": tokens.DefaultResultsAudience,
		"job": "j1", "scope": tokens.ScopeResultDownload, "jti": "x", "iat": now.Unix(), "exp": now.Add(48 * time.Hour).Unix()})
	if _, err := v.VerifyLink(long); !errors.Is(err, tokens.ErrMalformed) {
		t.Fatalf("48 h link: %v", err)
	}
	wrongScope := signRaw(t, ks, "link+jwt", jwt.MapClaims{"iss": tokens.DefaultProgressIssuer, "aud": tokens.DefaultResultsAudience,
		"job": "j1", "scope": "job:result", "jti": "x", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()})
	if _, err := v.VerifyLink(wrongScope); !errors.Is(err, tokens.ErrMalformed) {
		t.Fatalf("link with another scope: %v", err)
	}
}

// TestLinkVerifierMaxLifetime: a verifier for links whose minter only ever
// makes short ones (the webhook deliverer's, 10 min) refuses a longer one,
// so that a stolen minting key signs nothing that lives past what its
// minter would have made; within the bound the link verifies.
func TestLinkVerifierMaxLifetime(t *testing.T) {
	ks := newSet(t)
	m := &tokens.LinkMinter{Keys: ks, Issuer: "urn:claimcheck:webhooks"}
	v := &tokens.LinkVerifier{Keys: ks, Issuer: "urn:claimcheck:webhooks", MaxLifetime: 10 * time.Minute}
	short, _, err := m.MintLink("j1", 0, "", "attachment", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyLink(short); err != nil {
		t.Fatalf("a 10 min link: %v", err)
	}
	long, _, err := m.MintLink("j1", 0, "", "attachment", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyLink(long); !errors.Is(err, tokens.ErrMalformed) {
		t.Fatalf("a 24 h link under a 10 min bound: %v", err)
	}
	if _, err := (&tokens.LinkVerifier{Keys: ks, Issuer: "urn:claimcheck:webhooks"}).VerifyLink(long); err != nil {
		t.Fatalf("without a bound a 24 h link verifies: %v", err)
	}
}
