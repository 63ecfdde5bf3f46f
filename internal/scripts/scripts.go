// Package scripts keeps the list of every Lua script claimcheck's own
// packages run on Redis, so that tests can treat them as a set: load them
// all on every node of a cluster beforehand (a script's first EVALSHA on a
// node otherwise fails NOSCRIPT and is sent again as EVAL, which shifts a
// fault test's count of commands), or check that each one loads there.
//
// The services never load scripts themselves: their Redis users may not
// run SCRIPT (deploy/redis/users.acl); go-redis sends EVALSHA and falls
// back to EVAL.
package scripts

import (
	"sync"

	"github.com/redis/go-redis/v9"
)

var (
	mu  sync.Mutex
	all []*redis.Script
)

// New is redis.NewScript, listing the script in All.
func New(src string) *redis.Script {
	s := redis.NewScript(src)
	mu.Lock()
	all = append(all, s)
	mu.Unlock()
	return s
}

// All is every script made with New so far (each package's are made when
// it is initialised).
func All() []*redis.Script {
	mu.Lock()
	defer mu.Unlock()
	return append([]*redis.Script(nil), all...)
}
