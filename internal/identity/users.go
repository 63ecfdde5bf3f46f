package identity

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/argon2"

	"github.com/claimcheck/claimcheck/internal/scripts"
)

// Errors of the user store.
var (
	ErrUserExists   = errors.New("user already exists")
	ErrUserNotFound = errors.New("user not found")
	// ErrBadPassword is returned for an unknown user, a wrong password and a
	// blocked user alike, so a login answer cannot be used to probe which
	// accounts exist.
	ErrBadPassword = errors.New("wrong user name or password")
	// ErrUserBlocked refuses a new session or API key for a blocked user.
	// The check runs in the same Redis script that indexes the credential
	// under its user, so a sign-in (or key creation) that was already under
	// way when the user was blocked cannot leave a credential behind: Block
	// raises the flag in the script that reads the indexes, and every
	// creation either was indexed before (and is revoked) or sees the flag
	// (see the package doc).
	ErrUserBlocked = errors.New("user is blocked")
)

// Argon2Params are argon2id's cost parameters. They are stored with every
// hash, so raising them later re-hashes each password at its next login.
type Argon2Params struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
}

// DefaultArgon2 follows RFC 9106's second recommended option (64 MiB, 3
// passes), with 2 lanes for small machines.
var DefaultArgon2 = Argon2Params{Memory: 64 * 1024, Time: 3, Threads: 2}

const (
	argonSaltLen = 16
	argonKeyLen  = 32
	// MinPasswordLen and MaxPasswordLen bound passwords; the maximum keeps
	// hashing cost bounded for hostile input.
	MinPasswordLen = 8
	MaxPasswordLen = 1024
)

// User is a stored user, without its password hash.
type User struct {
	Name      string    `json:"name"`
	Blocked   bool      `json:"blocked"`
	CreatedAt time.Time `json:"created_at"`
}

// Users stores users and checks their passwords.
type Users struct {
	rdb    redis.Cmdable
	params Argon2Params
	now    func() time.Time
	// dummy is hashed against when a user does not exist, so an unknown
	// name costs as much time as a wrong password. Made on first use.
	dummyOnce sync.Once
	dummy     string
}

// NewUsers returns a user store. params nil means DefaultArgon2; now nil
// means time.Now.
func NewUsers(rdb redis.Cmdable, params *Argon2Params, now func() time.Time) *Users {
	u := &Users{rdb: rdb, params: DefaultArgon2, now: now}
	if params != nil {
		u.params = *params
	}
	if u.now == nil {
		u.now = time.Now
	}
	return u
}

// spendDummy costs what checking a real password costs.
func (u *Users) spendDummy(pw string) {
	u.dummyOnce.Do(func() { u.dummy, _ = u.hash("not a real password, only spent time") })
	u.verify(u.dummy, pw)
}

func checkPassword(pw string) error {
	switch {
	case len(pw) < MinPasswordLen:
		return fmt.Errorf("password must have at least %d characters", MinPasswordLen)
	case len(pw) > MaxPasswordLen:
		return fmt.Errorf("password must have at most %d bytes", MaxPasswordLen)
	}
	return nil
}

// hash encodes an argon2id hash in the PHC string format, parameters
// included: $argon2id$v=19$m=65536,t=3,p=2$<salt>$<hash>.
func (u *Users) hash(pw string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("salt: %w", err)
	}
	p := u.params
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// verify checks pw against an encoded hash and reports whether the hash
// used other parameters than the store's (and should be redone).
func (u *Users) verify(encoded, pw string) (ok, stale bool) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return false, false
	}
	var p Argon2Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil {
		return false, false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 || p.Memory > 1<<22 || p.Time > 64 || p.Threads == 0 {
		return false, false
	}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, p != u.params
}

// Add creates a user under the canonical form of name (see
// CanonicalUserName): adding ANN when ann exists is ErrUserExists.
func (u *Users) Add(ctx context.Context, name, password string) error {
	canon, ok := CanonicalUserName(name)
	if !ok {
		return errBadUserName(name)
	}
	name = canon
	if err := checkPassword(password); err != nil {
		return err
	}
	h, err := u.hash(password)
	if err != nil {
		return err
	}
	// The name is listed first (cc:users is a slot of its own): a failure
	// between the two steps leaves a listed name without a record, which
	// List skips and a retry completes, never a user who can sign in but
	// is missing from the list an operator blocks from.
	if err := u.rdb.SAdd(ctx, KeyUsers, name).Err(); err != nil {
		return fmt.Errorf("add user %s: %w", name, err)
	}
	created, err := addUserScript.Run(ctx, u.rdb, []string{userKey(name)}, h, name, u.now().UnixMilli()).Int()
	if err != nil {
		return fmt.Errorf("add user %s: %w", name, err)
	}
	if created == 0 {
		return fmt.Errorf("add user %s: %w", name, ErrUserExists)
	}
	return nil
}

// addUserScript writes a user record unless one exists (one key).
var addUserScript = scripts.New(`
-- KEYS[1] user; ARGV: password hash, name, created ms
if redis.call("HGET", KEYS[1], "pw") then return 0 end
redis.call("HSET", KEYS[1], "pw", ARGV[1], "name", ARGV[2], "blocked", 0, "created", ARGV[3])
return 1
`)

// SetPassword replaces a user's password.
func (u *Users) SetPassword(ctx context.Context, name, password string) error {
	name = canonicalOr(name)
	if err := checkPassword(password); err != nil {
		return err
	}
	if _, err := u.Get(ctx, name); err != nil {
		return err
	}
	h, err := u.hash(password)
	if err != nil {
		return err
	}
	if err := u.rdb.HSet(ctx, userKey(name), "pw", h).Err(); err != nil {
		return fmt.Errorf("set password of %s: %w", name, err)
	}
	return nil
}

// Get reads a user.
func (u *Users) Get(ctx context.Context, name string) (*User, error) {
	name = canonicalOr(name)
	vals, err := u.rdb.HMGet(ctx, userKey(name), "name", "blocked", "created").Result()
	if err != nil {
		return nil, fmt.Errorf("get user %s: %w", name, err)
	}
	n, _ := vals[0].(string)
	if n == "" {
		return nil, fmt.Errorf("user %s: %w", name, ErrUserNotFound)
	}
	usr := &User{Name: n, Blocked: vals[1] == "1"}
	if c, _ := vals[2].(string); c != "" {
		if ms, err := strconv.ParseInt(c, 10, 64); err == nil {
			usr.CreatedAt = time.UnixMilli(ms).UTC()
		}
	}
	return usr, nil
}

// List returns every user, sorted by name.
func (u *Users) List(ctx context.Context) ([]User, error) {
	// SMEMBERS and a sort here rather than SORT, which ACLs class as
	// dangerous and embedded Redis lacks.
	names, err := u.rdb.SMembers(ctx, KeyUsers).Result()
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	slices.Sort(names)
	users := make([]User, 0, len(names))
	for _, n := range names {
		usr, err := u.Get(ctx, n)
		if errors.Is(err, ErrUserNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		users = append(users, *usr)
	}
	return users, nil
}

// CheckPassword returns the user if password is theirs and they are not
// blocked. Every refusal is ErrBadPassword and costs one argon2id hash.
// A hash made with older parameters is redone with the current ones.
func (u *Users) CheckPassword(ctx context.Context, name, password string) (*User, error) {
	name, ok := CanonicalUserName(name)
	if len(password) > MaxPasswordLen || !ok {
		u.spendDummy(password[:min(len(password), MaxPasswordLen)])
		return nil, ErrBadPassword
	}
	vals, err := u.rdb.HMGet(ctx, userKey(name), "pw", "blocked").Result()
	if err != nil {
		return nil, fmt.Errorf("check password of %s: %w", name, err)
	}
	encoded, _ := vals[0].(string)
	if encoded == "" {
		u.spendDummy(password)
		return nil, ErrBadPassword
	}
	ok, stale := u.verify(encoded, password)
	if !ok || vals[1] == "1" {
		return nil, ErrBadPassword
	}
	if stale {
		if h, err := u.hash(password); err == nil {
			_ = u.rdb.HSet(ctx, userKey(name), "pw", h).Err() // best effort; next login retries
		}
	}
	return u.Get(ctx, name)
}

// unblock clears a user's blocked flag.
func (u *Users) unblock(ctx context.Context, name string) error {
	name = canonicalOr(name)
	ok, err := setFlagScript.Run(ctx, u.rdb, []string{userKey(name)}, 0).Int()
	if err != nil {
		return fmt.Errorf("unblock %s: %w", name, err)
	}
	if ok == 0 {
		return fmt.Errorf("user %s: %w", name, ErrUserNotFound)
	}
	return nil
}

// setFlagScript sets an existing user's blocked flag (one key).
var setFlagScript = scripts.New(`
-- KEYS[1] user; ARGV[1] 0 or 1
if not redis.call("HGET", KEYS[1], "name") then return 0 end
redis.call("HSET", KEYS[1], "blocked", ARGV[1])
return 1
`)
