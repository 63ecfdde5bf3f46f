package app_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"

	"github.com/claimcheck/claimcheck/api/ratelimit"
	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/identity"
)

// from returns a client whose connections come from the loopback address
// ip (any of 127.0.0.0/8 on Linux), so the api sees distinct client
// addresses without believing any forwarded header.
func from(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// signIn tries a password and answers the status and, for a 429, which
// limit was spent.
func signIn(t *testing.T, c *http.Client, base, user, password string) (int, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"username": user, "password": password})
	resp, err := c.Post(base+"/v1/sessions", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p struct {
		Type  string `json:"type"`
		Limit string `json:"limit"`
	}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &p)
	if resp.StatusCode == 429 && p.Type != "urn:claimcheck:problem:rate-limited" {
		t.Fatalf("429 of type %q", p.Type)
	}
	return resp.StatusCode, p.Limit
}

// TestFinding4AttackerCannotLockOwnerOut: wrong passwords from one address
// spend that address's budget for the user (and its own), not the user's:
// the owner signs in from elsewhere. Case variants of a name are the same
// user and the same budget. A slower per-user budget is the backstop
// against many addresses.
func TestFinding4AttackerCannotLockOwnerOut(t *testing.T) {
	s := newStack(t, func(c *app.Config) {
		l := ratelimit.DefaultLimits()
		l.LoginPerUserIP = redis_rate.PerMinute(3)
		l.LoginPerIP = redis_rate.PerMinute(8)
		l.LoginPerUser = redis_rate.PerHour(6)
		c.Limits = &l
	})
	attacker, owner, another := from("127.0.0.2"), from("127.0.0.3"), from("127.0.0.4")
	for i := range 3 {
		if code, _ := signIn(t, attacker, s.api.URL, "ann", "guess"+string(rune('a'+i))); code != 401 {
			t.Fatalf("guess %d: %d", i, code)
		}
	}
	// The attacker's budget for ann is spent, under any spelling of ann.
	for _, name := range []string{"ann", "ANN", "Ann"} {
		if code, limit := signIn(t, attacker, s.api.URL, name, "correct horse"); code != 429 || limit != "login-user-ip" {
			t.Fatalf("attacker as %s after three failures: %d %s", name, code, limit)
		}
	}
	// The owner, from another address, signs in, under any spelling.
	if code, _ := signIn(t, owner, s.api.URL, "ann", "correct horse"); code != 201 {
		t.Fatalf("owner from another address: %d", code)
	}
	if code, _ := signIn(t, owner, s.api.URL, "ANN", "correct horse"); code != 201 {
		t.Fatalf("owner as ANN: %d", code)
	}
	// The attacker's address has its own limit across user names.
	for _, name := range []string{"bob", "carol"} {
		if code, _ := signIn(t, attacker, s.api.URL, name, "whatever1"); code != 401 {
			t.Fatalf("attacker trying %s: %d", name, code)
		}
	}
	if code, limit := signIn(t, attacker, s.api.URL, "dave", "whatever1"); code != 429 || limit != "login-ip" {
		t.Fatalf("attacker's ninth try from one address: %d %s", code, limit)
	}
	// The per-user backstop: ann has had 3 + 2 tries in the hour; a sixth
	// from a third address is the last the hour allows.
	if code, _ := signIn(t, another, s.api.URL, "ann", "guess"); code != 401 {
		t.Fatalf("sixth try on ann: %d", code)
	}
	if code, limit := signIn(t, another, s.api.URL, "ann", "guess"); code != 429 || limit != "login-user" {
		t.Fatalf("seventh try on ann in the hour: %d %s", code, limit)
	}
	// Attackers on many addresses can drain the backstop, but not for an
	// address the owner signed in from lately: the owner still gets in
	// from there, with the right password only.
	if code, _ := signIn(t, owner, s.api.URL, "ann", "correct horse"); code != 201 {
		t.Fatalf("owner from a known address once the backstop is spent: %d", code)
	}
	if code, _ := signIn(t, owner, s.api.URL, "ann", "guess"); code != 401 {
		t.Fatalf("wrong password from the owner's address: %d", code)
	}
	if code, limit := signIn(t, from("127.0.0.5"), s.api.URL, "ann", "correct horse"); code != 429 || limit != "login-user" {
		t.Fatalf("a new address once the backstop is spent: %d %s", code, limit)
	}
}

// TestFinding4UserNamesAreCaseInsensitive: a user added as ANN is ann,
// everywhere: sign-in, a second add, block, API keys.
func TestFinding4UserNamesAreCaseInsensitive(t *testing.T) {
	s := newStack(t)
	ctx := context.Background()
	dir := s.dir
	if err := dir.Users.Add(ctx, "BOB", "battery staple"); err != nil {
		t.Fatal(err)
	}
	if err := dir.Users.Add(ctx, "bob", "another one"); err == nil {
		t.Fatal("bob added twice, once as BOB")
	}
	if code, _ := signIn(t, http.DefaultClient, s.api.URL, "bob", "battery staple"); code != 201 {
		t.Fatalf("BOB signing in as bob: %d", code)
	}
	u, err := dir.Users.Get(ctx, "Bob")
	if err != nil || u.Name != "bob" {
		t.Fatalf("get Bob: %+v %v", u, err)
	}
	_, key, err := dir.APIKeys.CreateKey(ctx, identity.KeySpec{User: "BoB"})
	if err != nil || key.User != "bob" {
		t.Fatalf("key for BoB: %+v %v", key, err)
	}
	if err := dir.Block(ctx, "BOB"); err != nil {
		t.Fatal(err)
	}
	if code, _ := signIn(t, http.DefaultClient, s.api.URL, "bob", "battery staple"); code != 401 {
		t.Fatalf("bob after block BOB: %d", code)
	}
	if keys, _ := dir.APIKeys.ListUser(ctx, "bob"); len(keys) != 0 {
		t.Fatalf("bob's keys after block BOB: %d", len(keys))
	}
}
