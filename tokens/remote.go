package tokens

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// RemoteKeys is a KeySource backed by a JWKS URL, such as the api's
// /.well-known/jwks.json. It serves known kids from memory. An unknown kid
// (the api rotated its key) or a set older than MaxAge triggers a refetch,
// but at most one per MinRefreshInterval, so a flood of tokens with made-up
// kids cannot turn into a flood of requests to the api. A failed refetch
// keeps the keys it had.
type RemoteKeys struct {
	url    string
	kind   string
	client *http.Client

	// MinRefreshInterval spaces refetches (30s).
	MinRefreshInterval time.Duration
	// MaxAge is how long a fetched set is used before it is refetched on
	// the next lookup (5 min).
	MaxAge time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time

	mu          sync.Mutex // serialises fetches
	keys        *KeySet
	fetchedAt   time.Time
	lastAttempt time.Time
	pendingErr  error        // the last failed fetch while keys is nil
	rmu         sync.RWMutex // guards keys, fetchedAt and pendingErr for readers
}

// NewRemoteKeys fetches url once and returns a key source of its job-token
// keys that keeps it fresh. client nil means a client with a 10 s timeout.
func NewRemoteKeys(ctx context.Context, url string, client *http.Client) (*RemoteKeys, error) {
	return NewRemoteKeysOf(ctx, url, KindJob, client)
}

// NewRemoteKeysOf is NewRemoteKeys for the keys of another kind (KindAccess
// for the gateway's JWKS, KindReceipt for the worker fleet's): a key of any
// other kind in the document is never used.
func NewRemoteKeysOf(ctx context.Context, url, kind string, client *http.Client) (*RemoteKeys, error) {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	r := &RemoteKeys{url: url, kind: kind, client: client, MinRefreshInterval: 30 * time.Second, MaxAge: 5 * time.Minute, Now: time.Now}
	if err := r.fetch(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// StartRemoteKeys is NewRemoteKeys for a process that must start even when
// the JWKS is not reachable yet (the api starts after it, or is
// restarting): it tries url once (for at most firstFetchTimeout) and, if
// that fails, returns a source without keys that keeps fetching in the
// background with capped exponential backoff until one fetch succeeds or
// ctx ends. Until then PublicKey fails with ErrKeysUnavailable (a 503, not
// a 401) and Ready reports the source not ready. log (slog.Default when
// nil) hears once that the keys are missing and once that they arrived.
func StartRemoteKeys(ctx context.Context, url string, client *http.Client, log *slog.Logger) *RemoteKeys {
	return StartRemoteKeysOf(ctx, url, KindJob, client, log)
}

// StartRemoteKeysOf is StartRemoteKeys for the keys of another kind.
func StartRemoteKeysOf(ctx context.Context, url, kind string, client *http.Client, log *slog.Logger) *RemoteKeys {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	if log == nil {
		log = slog.Default()
	}
	r := &RemoteKeys{url: url, kind: kind, client: client, MinRefreshInterval: 30 * time.Second, MaxAge: 5 * time.Minute, Now: time.Now}
	first, cancel := context.WithTimeout(ctx, firstFetchTimeout)
	err := r.Reload(first)
	cancel()
	if err == nil {
		return r
	}
	r.setPending(err)
	log.Warn("job-token keys not loaded yet; retrying in the background", "err", err)
	go r.fetchUntilLoaded(ctx, log)
	return r
}

// firstFetchTimeout bounds StartRemoteKeys' first attempt, so an
// unreachable JWKS delays a start by no more than this.
const firstFetchTimeout = 3 * time.Second

// Retry backoff of a source without keys: from retryMin, doubling, at most
// retryMax, each wait jittered by up to a quarter so a fleet restarted at
// once does not fetch in step.
const (
	retryMin = 200 * time.Millisecond
	retryMax = 10 * time.Second
)

func (r *RemoteKeys) fetchUntilLoaded(ctx context.Context, log *slog.Logger) {
	wait := retryMin
	for attempt := 1; ; attempt++ {
		timer := time.NewTimer(wait + rand.N(wait/4+1))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		if r.loaded() { // a Reload got them meanwhile
			return
		}
		fctx, cancel := context.WithTimeout(ctx, r.client.Timeout+time.Second)
		err := r.Reload(fctx)
		cancel()
		if err == nil {
			log.Info("job-token keys loaded", "attempts", attempt+1)
			return
		}
		r.setPending(err)
		wait = min(wait*2, retryMax)
	}
}

func (r *RemoteKeys) setPending(err error) {
	r.rmu.Lock()
	r.pendingErr = err
	r.rmu.Unlock()
}

func (r *RemoteKeys) loaded() bool {
	r.rmu.RLock()
	defer r.rmu.RUnlock()
	return r.keys != nil
}

// Ready reports whether the source has keys: nil once a fetch succeeded,
// else ErrKeysUnavailable with the last fetch's error (a readiness check).
func (r *RemoteKeys) Ready(context.Context) error {
	r.rmu.RLock()
	defer r.rmu.RUnlock()
	switch {
	case r.keys != nil:
		return nil
	case r.pendingErr == nil:
		return ErrKeysUnavailable
	}
	return fmt.Errorf("%w: %w", ErrKeysUnavailable, r.pendingErr)
}

// PublicKey implements KeySource. Before the first successful fetch it
// fails with ErrKeysUnavailable, and leaves the fetching to the
// background (a flood of requests makes no requests to the api).
func (r *RemoteKeys) PublicKey(kid string) (ed25519.PublicKey, error) {
	r.rmu.RLock()
	keys, fetchedAt := r.keys, r.fetchedAt
	r.rmu.RUnlock()
	if keys == nil {
		return nil, ErrKeysUnavailable
	}
	pub, err := keys.PublicKey(kid)
	if err == nil && r.Now().Sub(fetchedAt) < r.MaxAge {
		return pub, nil
	}
	r.refresh()
	r.rmu.RLock()
	keys = r.keys
	r.rmu.RUnlock()
	return keys.PublicKey(kid)
}

// Reload fetches the set now, whatever the interval (a key was rotated or
// retired and the owner said so). On failure the old keys stay in use.
func (r *RemoteKeys) Reload(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fetch(ctx)
}

// refresh refetches unless one was attempted within MinRefreshInterval.
func (r *RemoteKeys) refresh() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Now().Sub(r.lastAttempt) < r.MinRefreshInterval {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = r.fetch(ctx) // on failure the old keys stay in use
}

func (r *RemoteKeys) fetch(ctx context.Context) error {
	r.lastAttempt = r.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return fmt.Errorf("jwks %s: %w", r.url, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("jwks %s: %w", r.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("jwks %s: status %s", r.url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return fmt.Errorf("jwks %s: %w", r.url, err)
	}
	keys, err := parseJWKS(body, r.kind)
	if err != nil {
		return fmt.Errorf("jwks %s: %w", r.url, err)
	}
	r.rmu.Lock()
	r.keys, r.fetchedAt = keys, r.Now()
	r.rmu.Unlock()
	return nil
}

var _ KeySource = (*RemoteKeys)(nil)
var _ KeySource = (*KeySet)(nil)
