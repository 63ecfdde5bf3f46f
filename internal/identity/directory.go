package identity

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/scripts"
	"github.com/claimcheck/claimcheck/internal/secret"
)

// Directory is the whole of identity: users, their sessions and API keys,
// and the operations that span them.
type Directory struct {
	Users    *Users
	Sessions *Sessions
	APIKeys  *APIKeys
	// Revocations announces every session, key and user revocation made
	// through this directory; add in-process listeners with OnRevoke.
	Revocations *Revocations
}

// NewDirectory builds the three stores on one Redis. params nil means
// DefaultArgon2; now nil means time.Now.
func NewDirectory(rdb redis.Cmdable, sessions SessionConfig, params *Argon2Params, now func() time.Time) *Directory {
	d := &Directory{
		Users:       NewUsers(rdb, params, now),
		Sessions:    NewSessions(rdb, sessions, now),
		APIKeys:     NewAPIKeys(rdb, now),
		Revocations: NewRevocations(rdb),
	}
	d.Sessions.rev, d.APIKeys.rev = d.Revocations, d.Revocations
	return d
}

// Authenticate resolves any bearer credential — an API key (cck_…) or a
// session (ccs_…) — to its principal. Anything else is ErrUnauthenticated.
func (d *Directory) Authenticate(ctx context.Context, s secret.Secret) (*Principal, error) {
	switch raw := s.Reveal(); {
	case strings.HasPrefix(raw, APIKeyPrefix):
		return d.APIKeys.Authenticate(ctx, s)
	case strings.HasPrefix(raw, SessionPrefix):
		return d.Sessions.Authenticate(ctx, s)
	}
	return nil, ErrUnauthenticated
}

// Block stops a user at once: every session and API key ends now, and the
// password no longer signs in. Jobs already submitted keep running and their
// job tokens keep working until they expire: a job token is a proof about
// one job, not a credential of the user (see README, "Blocking a user").
//
// One script in the user's slot raises the flag and reads both credential
// indexes; the credentials, each in a slot of its own, are deleted after
// it, and their index entries last. A sign-in or key creation under way
// either indexed its credential before the flag (and the sweep ends it) or
// sees the flag (and refuses): doc.go, "Block", says why.
func (d *Directory) Block(ctx context.Context, name string) error {
	name = canonicalOr(name)
	res, err := blockScript.Run(ctx, d.Users.rdb, []string{userKey(name), userSessionsKey(name), userAPIKeysKey(name)}).Slice()
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("user %s: %w", name, ErrUserNotFound)
	}
	if err != nil || len(res) != 2 {
		return fmt.Errorf("block %s: %w", name, errOr(err, "unexpected reply"))
	}
	sessions := map[string]string{}
	flat, _ := res[0].([]any)
	for i := 0; i+1 < len(flat); i += 2 {
		id, _ := flat[i].(string)
		key, _ := flat[i+1].(string)
		sessions[id] = key
	}
	var keyIDs []string
	ids, _ := res[1].([]any)
	for _, id := range ids {
		if s, ok := id.(string); ok {
			keyIDs = append(keyIDs, s)
		}
	}
	// Announced once the credentials are gone from Redis, so a cache that
	// hears it and looks again finds nothing; announced after a sweep that
	// failed midway too, for what it did end (the caller runs Block again
	// for the rest).
	announce := func() error { return d.Revocations.Announce(ctx, Revocation{Kind: RevokedUser, ID: name}) }
	if _, err := d.Sessions.sweep(ctx, name, sessions); err != nil {
		_ = announce()
		return fmt.Errorf("block %s: end sessions: %w", name, err)
	}
	if _, err := d.APIKeys.sweep(ctx, name, keyIDs); err != nil {
		_ = announce()
		return fmt.Errorf("block %s: revoke api keys: %w", name, err)
	}
	return announce()
}

// blockScript raises an existing user's blocked flag and returns, read in
// the same step, the user's session index (flat id, record key pairs) and
// API key ids. All three keys are in the user's slot. No user: nil.
var blockScript = scripts.New(`
-- KEYS[1] user, KEYS[2] user's sessions, KEYS[3] user's keys
if not redis.call("HGET", KEYS[1], "name") then return false end
redis.call("HSET", KEYS[1], "blocked", 1)
return {redis.call("HGETALL", KEYS[2]), redis.call("SMEMBERS", KEYS[3])}
`)

func errOr(err error, msg string) error {
	if err != nil {
		return err
	}
	return errors.New(msg)
}

// Unblock lets a user sign in again; their old sessions and keys stay gone.
func (d *Directory) Unblock(ctx context.Context, name string) error {
	return d.Users.unblock(ctx, name)
}

// Confirm reports whether the credential p was authenticated with is live
// in Redis now: its session (Sessions.Confirm) or its API key
// (APIKeys.Confirm). A principal built from an internal token knows its
// credential only as of the token's minting; routes that derive a
// longer-lived credential from it confirm it first. An unknown, ended or
// unnamed credential is ErrUnauthenticated.
func (d *Directory) Confirm(ctx context.Context, p *Principal) error {
	switch {
	case p == nil:
		return ErrUnauthenticated
	case p.Via == "session":
		return d.Sessions.Confirm(ctx, p.UserID, p.CredentialID)
	case p.Via == "api_key":
		return d.APIKeys.Confirm(ctx, p.UserID, p.CredentialID)
	}
	return ErrUnauthenticated
}
