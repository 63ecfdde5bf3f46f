package config

import (
	"fmt"
	"os"
	"slices"
	"strconv"
)

// examplePasswords are the passwords deploy/redis/users.acl ships with.
// They are public, so a Redis that uses them is open to anyone who can
// reach it; the services refuse them unless told this is a throwaway setup.
var examplePasswords = []string{"change-me-api", "change-me-worker", "change-me-progress", "change-me-gateway"}

// AllowExampleEnv is the variable of --allow-example-passwords, also read
// by the commands that have no such flag (keys rotate, keys retire).
const AllowExampleEnv = "CLAIMCHECK_ALLOW_EXAMPLE_PASSWORDS"

// CheckRedisPassword refuses a Redis URL whose password is one of the
// shipped examples, unless allow. The error names the example (it is
// public) but never any other password, and never the URL.
func CheckRedisPassword(redisURL string, allow bool) error {
	if redisURL == "" || allow {
		return nil
	}
	t, err := parseRedisURL(redisURL)
	if err != nil || !t.hasPass {
		return nil // OpenRedis reports a bad URL without echoing it
	}
	pw := t.password
	if !slices.Contains(examplePasswords, pw) {
		return nil
	}
	return fmt.Errorf("REDIS_URL uses the shipped example password '%s'; set your own in deploy/redis/users.acl and compose.yaml (compose: CLAIMCHECK_REDIS_PASSWORD_* in .env), or pass --allow-example-passwords / %s=1 for a throwaway setup", pw, AllowExampleEnv)
}

// AllowExampleFromEnv reads CLAIMCHECK_ALLOW_EXAMPLE_PASSWORDS, for
// commands without the flag.
func AllowExampleFromEnv() bool {
	ok, _ := strconv.ParseBool(os.Getenv(AllowExampleEnv))
	return ok
}
