package pubkeys_test

import (
	"errors"
	"testing"
	"time"

	"github.com/claimcheck/claimcheck/internal/redistest"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/tokens/pubkeys"
	"github.com/claimcheck/claimcheck/tokens/tokenstest"
)

func newSet(t *testing.T) *tokens.KeySet {
	return tokenstest.NewKeySet(t)
}

func TestPublishedKeysAreReadByKind(t *testing.T) {
	rdb := redistest.Client(t)
	ctx := t.Context()
	receipts, webhooks := newSet(t), newSet(t)
	if err := pubkeys.Publish(ctx, rdb, tokens.KindReceipt, receipts); err != nil {
		t.Fatal(err)
	}
	if err := pubkeys.Publish(ctx, rdb, tokens.KindWebhook, webhooks); err != nil {
		t.Fatal(err)
	}
	// A forged entry whose kid is not its key's thumbprint is never used.
	other := newSet(t).JWKS().Keys[0]
	if err := rdb.HSet(ctx, pubkeys.Key(tokens.KindReceipt), "made-up-kid", other.X).Err(); err != nil {
		t.Fatal(err)
	}

	now := time.Unix(1_800_000_000, 0)
	src := pubkeys.NewSource(rdb, tokens.KindReceipt)
	src.Now = func() time.Time { return now }
	kid := receipts.KIDs()[0]
	if _, err := src.PublicKey(kid); err != nil {
		t.Fatalf("published receipt key: %v", err)
	}
	if _, err := src.PublicKey(webhooks.KIDs()[0]); !errors.Is(err, tokens.ErrUnknownKey) {
		t.Fatalf("a webhook key from the receipt source: %v, want ErrUnknownKey", err)
	}
	if _, err := src.PublicKey("made-up-kid"); !errors.Is(err, tokens.ErrUnknownKey) {
		t.Fatalf("forged entry: %v, want ErrUnknownKey", err)
	}
	doc := src.JWKS(ctx)
	if len(doc.Keys) != 1 || doc.Keys[0].Kid != kid || doc.Keys[0].Kind != tokens.KindReceipt {
		t.Fatalf("JWKS = %+v, want the one receipt key tagged %q", doc.Keys, tokens.KindReceipt)
	}

	// A key published later (a rotation) is found once MinRefresh passed.
	rotated := newSet(t)
	if err := pubkeys.Publish(ctx, rdb, tokens.KindReceipt, rotated); err != nil {
		t.Fatal(err)
	}
	now = now.Add(src.MinRefresh)
	if _, err := src.PublicKey(rotated.KIDs()[0]); err != nil {
		t.Fatalf("rotated key after MinRefresh: %v", err)
	}
	if _, err := src.PublicKey(kid); err != nil {
		t.Fatalf("the first key stays published: %v", err)
	}
}

func TestUnreachableRedisIsKeysUnavailable(t *testing.T) {
	rdb := redistest.NewClient(t)
	src := pubkeys.NewSource(rdb, tokens.KindReceipt)
	if err := rdb.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := src.PublicKey("x"); !errors.Is(err, tokens.ErrKeysUnavailable) {
		t.Fatalf("PublicKey with Redis closed: %v, want ErrKeysUnavailable", err)
	}
}

// TestFirstKeysAreListedWithinMinRefresh: an api whose JWKS was read before
// any worker published (every api that starts first) lists the first
// worker's keys within MinRefresh, not only after MaxAge.
func TestFirstKeysAreListedWithinMinRefresh(t *testing.T) {
	rdb := redistest.Client(t)
	ctx := t.Context()
	now := time.Unix(1_800_000_000, 0)
	src := pubkeys.NewSource(rdb, tokens.KindReceipt)
	src.Now = func() time.Time { return now }
	if doc := src.JWKS(ctx); len(doc.Keys) != 0 {
		t.Fatalf("JWKS before any publication = %+v", doc.Keys)
	}
	ks := newSet(t)
	if err := pubkeys.Publish(ctx, rdb, tokens.KindReceipt, ks); err != nil {
		t.Fatal(err)
	}
	now = now.Add(src.MinRefresh)
	if doc := src.JWKS(ctx); len(doc.Keys) != 1 || doc.Keys[0].Kid != ks.KIDs()[0] {
		t.Fatalf("JWKS a MinRefresh after the first publication = %+v", doc.Keys)
	}
	// A reading with keys is kept for MaxAge as before.
	if err := pubkeys.Publish(ctx, rdb, tokens.KindReceipt, newSet(t)); err != nil {
		t.Fatal(err)
	}
	now = now.Add(src.MinRefresh)
	if doc := src.JWKS(ctx); len(doc.Keys) != 1 {
		t.Fatalf("JWKS re-read before MaxAge: %+v", doc.Keys)
	}
}

// TestReplaceWithdrawsOtherKeys: Replace leaves exactly its set published,
// so a Source reading afresh no longer knows a withdrawn kid; Publish adds.
func TestReplaceWithdrawsOtherKeys(t *testing.T) {
	rdb := redistest.Client(t)
	ctx := t.Context()
	old, fresh := newSet(t), newSet(t)
	if err := pubkeys.Publish(ctx, rdb, tokens.KindLink, old); err != nil {
		t.Fatal(err)
	}
	if err := pubkeys.Replace(ctx, rdb, tokens.KindLink, fresh); err != nil {
		t.Fatal(err)
	}
	src := pubkeys.NewSource(rdb, tokens.KindLink)
	if _, err := src.PublicKey(fresh.KIDs()[0]); err != nil {
		t.Fatalf("the replacing key: %v", err)
	}
	if _, err := src.PublicKey(old.KIDs()[0]); !errors.Is(err, tokens.ErrUnknownKey) {
		t.Fatalf("a withdrawn key: %v, want ErrUnknownKey", err)
	}
	if err := pubkeys.Replace(ctx, rdb, tokens.KindLink, &tokens.KeySet{}); err == nil {
		t.Fatal("an empty set replaced the published keys")
	}
	if n, _ := rdb.HLen(ctx, pubkeys.Key(tokens.KindLink)).Result(); n != 1 {
		t.Fatalf("%d keys published after a refused replace, want 1", n)
	}
}
