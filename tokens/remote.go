package tokens

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
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
	rmu         sync.RWMutex // guards keys and fetchedAt for readers
}

// NewRemoteKeys fetches url once and returns a key source that keeps it
// fresh. client nil means a client with a 10 s timeout.
func NewRemoteKeys(ctx context.Context, url string, client *http.Client) (*RemoteKeys, error) {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	r := &RemoteKeys{url: url, client: client, MinRefreshInterval: 30 * time.Second, MaxAge: 5 * time.Minute, Now: time.Now}
	if err := r.fetch(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// PublicKey implements KeySource.
func (r *RemoteKeys) PublicKey(kid string) (ed25519.PublicKey, error) {
	r.rmu.RLock()
	keys, fetchedAt := r.keys, r.fetchedAt
	r.rmu.RUnlock()
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
	keys, err := ParseJWKS(body)
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
