package identity

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

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
func (d *Directory) Block(ctx context.Context, name string) error {
	name = canonicalOr(name)
	if err := d.Users.setBlocked(ctx, name, true); err != nil {
		return err
	}
	if _, err := d.Sessions.RevokeAll(ctx, name); err != nil {
		return fmt.Errorf("block %s: %w", name, err)
	}
	if err := d.APIKeys.RevokeUser(ctx, name); err != nil {
		return fmt.Errorf("block %s: %w", name, err)
	}
	return nil
}

// Unblock lets a user sign in again; their old sessions and keys stay gone.
func (d *Directory) Unblock(ctx context.Context, name string) error {
	return d.Users.setBlocked(ctx, name, false)
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
