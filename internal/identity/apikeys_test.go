package identity_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/internal/secret"
)

func TestAPIKeyLifecycle(t *testing.T) {
	rdb := redistest.Client(t)
	keys := identity.NewAPIKeys(rdb, nil)
	ctx := context.Background()

	s, k, err := keys.Create(ctx, "ann", "laptop", "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.Reveal(), identity.APIKeyPrefix) || len(s.Reveal()) < 40 {
		t.Fatalf("key %q lacks prefix or entropy", s.Reveal())
	}
	p, err := keys.Authenticate(ctx, s)
	if err != nil || p.UserID != "ann" || p.CredentialID != k.ID || p.Via != "api_key" {
		t.Fatalf("authenticate = %+v, %v", p, err)
	}

	// Only the hash is stored: no key or value in Redis holds the secret.
	all := redistest.Keys(t, rdb, "*")
	for _, key := range all {
		dump := key
		if typ, _ := rdb.Type(ctx, key).Result(); typ == "hash" {
			dump += fmt.Sprint(rdb.HGetAll(ctx, key).Val())
		} else if typ == "string" {
			dump += rdb.Get(ctx, key).Val()
		}
		if strings.Contains(dump, s.Reveal()) || strings.Contains(dump, strings.TrimPrefix(s.Reveal(), identity.APIKeyPrefix)) {
			t.Fatalf("redis key %s holds the raw secret", key)
		}
	}

	list, err := keys.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != k.ID || list[0].Name != "laptop" || list[0].CreatedAt.IsZero() {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if err := keys.Revoke(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Authenticate(ctx, s); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Fatalf("revoked key authenticated: %v", err)
	}
	if list, _ := keys.List(ctx); len(list) != 0 {
		t.Fatalf("revoked key still listed: %+v", list)
	}
	if err := keys.Revoke(ctx, k.ID); !errors.Is(err, identity.ErrNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
}

func TestAPIKeyRefusals(t *testing.T) {
	keys := identity.NewAPIKeys(redistest.Client(t), nil)
	ctx := context.Background()
	for _, s := range []secret.Secret{"", "cck_", "cck_unknown-but-well-formed-0123456789", "Bearer x", secret.Secret("cck_" + strings.Repeat("a", 400))} {
		if _, err := keys.Authenticate(ctx, s); !errors.Is(err, identity.ErrUnauthenticated) {
			t.Errorf("Authenticate(%q) = %v", s, err)
		}
	}
	for _, user := range []string{"", "a b", "x:y", strings.Repeat("u", 65)} {
		if _, _, err := keys.Create(ctx, user, "", ""); err == nil {
			t.Errorf("Create accepted user %q", user)
		}
	}
	if _, _, err := keys.Create(ctx, "dev", "", "not-prefixed-0123456789abcdef"); err == nil {
		t.Error("Create accepted a preset key without the prefix")
	}
	preset := secret.Secret("cck_dev-0123456789abcdef")
	if _, _, err := keys.Create(ctx, "dev", "", preset); err != nil {
		t.Fatal(err)
	}
	if p, err := keys.Authenticate(ctx, preset); err != nil || p.UserID != "dev" {
		t.Fatalf("preset key: %+v, %v", p, err)
	}
}

func TestSecretRedaction(t *testing.T) {
	s := secret.Secret("cck_supersecret")
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %s %#v", s, s, s), s.LogValue().String()} {
		if strings.Contains(out, "supersecret") {
			t.Fatalf("secret printed: %s", out)
		}
	}
	if got, ok := secret.FromAuthorization("bearer  abc "); !ok || got.Reveal() != "abc" {
		t.Fatalf("FromAuthorization = %q, %v", got.Reveal(), ok)
	}
	for _, h := range []string{"", "Bearer", "Bearer ", "Basic abc", "Bearerabc"} {
		if _, ok := secret.FromAuthorization(h); ok {
			t.Errorf("FromAuthorization(%q) accepted", h)
		}
	}
}
