package config

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/redisconn"
	"github.com/claimcheck/claimcheck/internal/secret"
)

// Redis is an open connection, possibly to an embedded server: to one
// server, a Redis Cluster or a Sentinel group (see redisTarget for the URL
// forms).
type Redis struct {
	Client redis.UniversalClient
	// Embedded is set when no URL was given and an in-memory server runs
	// inside this process.
	Embedded *miniredis.Miniredis
	// EmbeddedURL is how to reach Embedded, password included (the dev
	// banner shows it; nothing logs it).
	EmbeddedURL secret.Secret
	// Monitor logs once when Redis goes away and once when it is back.
	Monitor *redisconn.Monitor
}

// RedisConfig says how to open Redis (DialRedis).
type RedisConfig struct {
	// URL is REDIS_URL; empty starts an embedded server.
	URL string
	// Logger receives the "redis unavailable" and "redis available again"
	// lines; nil means slog.Default() when they are logged.
	Logger *slog.Logger
	// CallTimeout bounds one Redis call (default redisconn.CallTimeout).
	CallTimeout time.Duration
	// DownLogQuiet is the least time between two "redis unavailable"
	// lines (default 30 s; negative: none).
	DownLogQuiet time.Duration
}

// quietGoRedis sends go-redis's own log lines to slog at debug, once per
// process (its logger is global).
var quietGoRedis sync.Once

// Close closes the client and stops an embedded server.
func (r *Redis) Close() {
	_ = r.Client.Close()
	if r.Embedded != nil {
		r.Embedded.Close()
	}
}

// OpenRedis connects to url and pings it, or starts an embedded server when
// url is empty (only `claimcheck dev` wants that; the services refuse an
// empty URL before they get here).
//
// The embedded server listens on a loopback port, where any local process
// (another user's, a browser page's fetch to 127.0.0.1) could otherwise
// read every session and key: it requires a password generated here, 32
// random bytes, which lives only in this process and in r.EmbeddedURL.
//
// Every call on the client is bounded (redisconn.CallTimeout) and watched
// by a redisconn.Monitor that logs through slog.Default().
func OpenRedis(ctx context.Context, url string) (*Redis, error) {
	return DialRedis(ctx, RedisConfig{URL: url})
}

// DialRedis is OpenRedis with the logger and bounds of cfg.
func DialRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	quietGoRedis.Do(func() { redis.SetLogger(redisconn.Logger{}) })
	url := cfg.URL
	r := &Redis{}
	if url == "" {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("embedded redis password: %w", err)
		}
		pw := base64.RawURLEncoding.EncodeToString(b)
		r.Embedded = miniredis.NewMiniRedis()
		r.Embedded.RequireAuth(pw)
		if err := r.Embedded.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("start embedded redis: %w", err)
		}
		url = "redis://:" + pw + "@" + r.Embedded.Addr()
		r.EmbeddedURL = secret.Secret(url)
	}
	t, err := parseRedisURL(url)
	if err != nil {
		return nil, err
	}
	r.Client = newClient(t)
	r.Monitor = redisconn.Instrument(r.Client, redisconn.MonitorConfig{
		Logger: cfg.Logger, Timeout: cfg.CallTimeout, Quiet: cfg.DownLogQuiet})
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := r.Client.Ping(pctx).Err(); err != nil {
		r.Close()
		return nil, fmt.Errorf("redis at %s: %w", strings.Join(t.addrs, ","), err)
	}
	return r, nil
}

// newClient builds the client for t. None sends CLIENT SETINFO on connect:
// the ACL users (deploy/redis/users.acl) may not run CLIENT at all, and
// Redis would log every refusal. Every one gets redisconn's timeouts.
func newClient(t redisTarget) redis.UniversalClient {
	switch t.mode {
	case "cluster":
		opt := &redis.ClusterOptions{Addrs: t.addrs, Username: t.user, Password: t.password,
			TLSConfig: t.tlsConfig(), DisableIdentity: true}
		redisconn.ConfigureCluster(opt)
		return redis.NewClusterClient(opt)
	case "sentinel":
		opt := &redis.FailoverOptions{MasterName: t.master, SentinelAddrs: t.addrs,
			SentinelUsername: t.sUser, SentinelPassword: t.sPass,
			Username: t.user, Password: t.password, TLSConfig: t.tlsConfig(), DisableIdentity: true}
		redisconn.ConfigureFailover(opt)
		return redis.NewFailoverClient(opt)
	}
	opt := &redis.Options{Addr: t.addrs[0], Username: t.user, Password: t.password,
		TLSConfig: t.tlsConfig(), DisableIdentity: true}
	redisconn.Configure(opt)
	return redis.NewClient(opt)
}
