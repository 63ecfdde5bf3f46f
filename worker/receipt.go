package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/internal/jobs"
	"github.com/claimcheck/claimcheck/tokens"
	"github.com/claimcheck/claimcheck/tokens/pubkeys"
)

// Result receipts. A worker given Config.ReceiptKeys signs, for every job
// it runs to success, a receipt (tokens.ReceiptClaims): the job, its type
// and the digest of the spec this worker announced for it, the SHA-256 of
// the input the handler got, the result's digest, size and content type,
// the successful attempt's number, start and finish, and the worker's id.
// The receipt is stored beside the record by the same script that records
// the success (jobs.Store.SucceedWithReceipt), so no succeeded record of
// such a worker is ever seen without its receipt, and it expires with the
// record; its holder downloads it (GET /v1/jobs/{id}/receipt) and keeps
// it as long as they like. The worker publishes the public halves of its
// receipt keys in Redis at Start (package pubkeys), and the api lists them
// in its JWKS.
//
// A worker without receipt keys (one embedded with New and a Config that
// sets none) runs jobs exactly the same and makes no receipts: their GET
// /v1/jobs/{id}/receipt answers 404.

// attemptFacts are what a receipt states of an attempt beyond its type,
// number and result.
type attemptFacts struct {
	inputSHA256 string
	started     time.Time
}

func newAttemptFacts(input []byte, started time.Time) attemptFacts {
	sum := sha256.Sum256(input)
	return attemptFacts{inputSHA256: hex.EncodeToString(sum[:]), started: started}
}

// emptySHA256 is the digest of no bytes: what a receipt states for a job
// that made no result (GET …/result answers it with no body).
var emptySHA256 = func() string { s := sha256.Sum256(nil); return hex.EncodeToString(s[:]) }()

// newReceipts prepares the minter when cfg has receipt keys; a set that
// cannot sign is refused here rather than at the first success.
func (s *Server) newReceipts() error {
	if s.cfg.ReceiptKeys == nil {
		return nil
	}
	if _, err := s.cfg.ReceiptKeys.Signer(); err != nil {
		return fmt.Errorf("worker: Config.ReceiptKeys: %w", err)
	}
	s.receipts = &tokens.ReceiptMinter{Keys: s.cfg.ReceiptKeys}
	return nil
}

// ReceiptKeys are the keys the worker signs receipts with (Config.ReceiptKeys;
// nil: it makes none).
func (s *Server) ReceiptKeys() *tokens.KeySet { return s.cfg.ReceiptKeys }

// publishReceiptKeys puts the public halves of the receipt keys in Redis,
// where the api's JWKS lists them. Keys stay published after rotation
// (pubkeys), so the receipts an old key signed keep verifying.
func (s *Server) publishReceiptKeys(ctx context.Context) error {
	if s.cfg.ReceiptKeys == nil {
		return nil
	}
	if err := pubkeys.Publish(ctx, s.rdb, tokens.KindReceipt, s.cfg.ReceiptKeys); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	return nil
}

// storeSuccess records attempt's success with res, and with a receipt
// stating it when the worker holds receipt keys.
func (s *Server) storeSuccess(ctx context.Context, typeName, id string, attempt int, res jobs.Result, slot *jobs.Slot, facts attemptFacts) (jobs.State, []jobs.Waiting, error) {
	if s.receipts == nil {
		return s.store.SucceedReleasing(ctx, id, attempt, res, s.cfg.Retention, slot)
	}
	at := time.Now().UTC().Truncate(time.Millisecond)
	sum := res.SHA256
	if sum == "" {
		sum = emptySHA256
	}
	started := facts.started
	if started.After(at) { // a clock step back: a receipt never ends before it starts
		started = at
	}
	tok, _, err := s.receipts.MintReceipt(tokens.ReceiptFacts{
		Job: id, Type: typeName, Spec: s.announcer.Digests()[typeName], InputSHA256: facts.inputSHA256,
		Result:    tokens.ReceiptResult{SHA256: sum, Size: res.Size, ContentType: res.ContentType},
		StartedAt: started, FinishedAt: at, Attempts: attempt, Worker: s.ID(),
	})
	if err != nil {
		// Not recorded without its receipt: the attempt is retried.
		return "", nil, err
	}
	return s.store.SucceedWithReceipt(ctx, id, attempt, res, s.cfg.Retention, slot, &jobs.Receipt{Token: tok, At: at})
}

// LoadReceiptKeys is how a worker process gets its receipt keys: the key
// set in dir, created with one key on first use (tokens.EnsureDir). Every
// worker of a fleet should share the directory; one that does not still
// makes receipts that verify, since every worker's keys are published.
func LoadReceiptKeys(dir string) (*tokens.KeySet, error) {
	ks, _, err := tokens.EnsureDir(dir)
	if err != nil {
		return nil, fmt.Errorf("receipt keys: %w", err)
	}
	return ks, nil
}

// ReloadReceiptKeys loads dir again into ks, publishing the keys it
// holds before ks signs with them, so that no receipt is signed by a key
// the api's JWKS does not list yet. When publishing fails, ks is left as
// it was (the old key goes on signing) and the error is returned.
func ReloadReceiptKeys(ctx context.Context, rdb redis.UniversalClient, dir string, ks *tokens.KeySet) error {
	fresh, err := tokens.LoadDir(dir)
	if err != nil {
		return fmt.Errorf("reload receipt keys: %w", err)
	}
	if err := pubkeys.Publish(ctx, rdb, tokens.KindReceipt, fresh); err != nil {
		return fmt.Errorf("reload receipt keys: %w", err)
	}
	ks.Replace(fresh)
	return nil
}

// watchReceiptKeys reloads ks from dir (ReloadReceiptKeys) whenever
// running processes are told that keys changed (`claimcheck keys rotate`
// announces it on cc:revocations), until ctx ends.
func watchReceiptKeys(ctx context.Context, rdb redis.UniversalClient, dir string, ks *tokens.KeySet, log *slog.Logger) {
	err := identity.ListenRevocations(ctx, rdb, func(rev identity.Revocation) {
		if rev.Kind != identity.RevokedAll {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := ReloadReceiptKeys(rctx, rdb, dir, ks); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("receipt keys not reloaded", "dir", dir, "err", err)
		}
	}, nil)
	if err != nil {
		log.Error("receipt key watcher stopped", "err", err)
	}
}
