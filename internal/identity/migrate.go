package identity

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Migration is what MigrateKeyLayout did.
type Migration struct {
	// Moved counts the keys copied to their tagged names.
	Moved int
	// Kept names users whose untagged record was left where it was because
	// a tagged one exists already (the user was added again after the
	// upgrade): an operator decides which to keep.
	Kept []string
}

// MigrateKeyLayout moves the user-side keys of a release before cluster
// support (cc:user:ann, cc:user-apikeys:ann, cc:user-sessions:ann) to
// their tagged names (cc:user:{ann} …). Credential records kept their
// names, so without it every pre-upgrade session and API key would still
// work while no index — and so no block — could reach it, and every user
// would be unknown. Run it once, with the api stopped, after upgrading
// (`claimcheck users migrate-layout`); running it again does nothing.
//
// It finds the users in cc:users and, for users with keys but no record
// (service accounts), in the key records the global key index names. Each
// key is copied and then its old name deleted, one key per command, so it
// works on a single server and on a cluster alike and a failed run is
// finished by the next one.
func MigrateKeyLayout(ctx context.Context, rdb redis.UniversalClient) (Migration, error) {
	var m Migration
	users, err := rdb.SMembers(ctx, KeyUsers).Result()
	if err != nil {
		return m, fmt.Errorf("migrate: list users: %w", err)
	}
	seen := map[string]bool{}
	for _, u := range users {
		seen[u] = true
	}
	ids, err := rdb.ZRange(ctx, KeyAPIKeyIndex, 0, -1).Result()
	if err != nil {
		return m, fmt.Errorf("migrate: list api keys: %w", err)
	}
	keys := &APIKeys{rdb: rdb}
	hashes, err := keys.hashes(ctx, ids)
	if err != nil {
		return m, fmt.Errorf("migrate: list api keys: %w", err)
	}
	for _, h := range hashes {
		if h == "" {
			continue
		}
		u, err := rdb.HGet(ctx, apiKeyKey(h), "user").Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return m, fmt.Errorf("migrate: read api key: %w", err)
		}
		if u != "" && !seen[u] {
			seen[u] = true
			users = append(users, u)
		}
	}
	for _, u := range users {
		if err := migrateUser(ctx, rdb, u, &m); err != nil {
			return m, fmt.Errorf("migrate user %s: %w", u, err)
		}
	}
	return m, nil
}

func migrateUser(ctx context.Context, rdb redis.UniversalClient, user string, m *Migration) error {
	// The record: copied only if no tagged one exists, field by field.
	old := KeyPrefixUser + user
	rec, err := rdb.HGetAll(ctx, old).Result()
	if err != nil {
		return err
	}
	if len(rec) > 0 {
		n, err := rdb.Exists(ctx, userKey(user)).Result()
		if err != nil {
			return err
		}
		if n == 1 {
			m.Kept = append(m.Kept, user)
		} else {
			if err := rdb.HSet(ctx, userKey(user), rec).Err(); err != nil {
				return err
			}
			if err := rdb.Del(ctx, old).Err(); err != nil {
				return err
			}
			m.Moved++
		}
	}
	// The indexes: merged into the tagged ones, so a block finds every
	// credential either name listed.
	old = KeyPrefixUserSessions + user
	sessions, err := rdb.HGetAll(ctx, old).Result()
	if err != nil {
		return err
	}
	if len(sessions) > 0 {
		if err := rdb.HSet(ctx, userSessionsKey(user), sessions).Err(); err != nil {
			return err
		}
		if err := rdb.Del(ctx, old).Err(); err != nil {
			return err
		}
		m.Moved++
	}
	old = KeyPrefixUserAPIKeys + user
	ids, err := rdb.SMembers(ctx, old).Result()
	if err != nil {
		return err
	}
	if len(ids) > 0 {
		if err := rdb.SAdd(ctx, userAPIKeysKey(user), anys(ids)...).Err(); err != nil {
			return err
		}
		if err := rdb.Del(ctx, old).Err(); err != nil {
			return err
		}
		m.Moved++
	}
	return nil
}
