package deploy_test

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestACLEachUserDeniedWhatItDoesNotNeed proves, on a real redis-server
// loaded with users.acl, what each process's user cannot do: no
// keyspace-wide commands (SCAN, KEYS, RANDOMKEY list every key name, user
// names included), no FLUSH*, no SCRIPT FLUSH/KILL, no server admin; keys
// and channels only of its own domain — also from inside a Lua script,
// which runs with the caller's ACL; PUBLISH only where it must publish.
// Every refusal is NOPERM and changes nothing: a canary key survives and
// no message reaches any channel. TestRedisACL proves the product still
// works as these users.
func TestACLEachUserDeniedWhatItDoesNotNeed(t *testing.T) {
	ctx := context.Background()
	r := startACLRedis(t)
	for _, k := range []string{"cc:job:{canary}", "cc:user:ann", "cc:session:x", "rate:cc:login:ann", "asynq:{default}:pending"} {
		if err := r.admin.Set(ctx, k+":canary", "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.admin.HSet(ctx, "cc:user:ann", "name", "ann").Err(); err != nil {
		t.Fatal(err)
	}
	watch := r.admin.PSubscribe(ctx, "*")
	defer watch.Close()
	if _, err := watch.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	everyone := [][]any{
		{"SCAN", "0"}, {"KEYS", "*"}, {"RANDOMKEY"}, {"FLUSHALL"}, {"FLUSHDB"},
		{"SCRIPT", "FLUSH"}, {"SCRIPT", "KILL"}, {"CONFIG", "GET", "*"}, {"CONFIG", "SET", "appendonly", "no"},
		{"CLIENT", "LIST"}, {"CLIENT", "KILL", "ID", "1"}, {"ACL", "LIST"},
		{"MONITOR"}, {"SHUTDOWN", "NOSAVE"}, {"SAVE"}, {"BGREWRITEAOF"}, {"SWAPDB", "0", "1"},
		{"MOVE", "cc:job:{canary}:canary", "1"}, {"OBJECT", "ENCODING", "cc:job:{canary}:canary"},
		{"PUBLISH", "cc:revocations", "all "}, {"SELECT", "1"},
	}
	identityKeys := [][]any{
		{"GET", "cc:user:ann:canary"}, {"HGETALL", "cc:user:ann"}, {"HGETALL", "cc:session:x"},
		{"SMEMBERS", "cc:users"}, {"HGETALL", "cc:apikey:x"}, {"GET", "cc:apikey-id:x"},
		{"SMEMBERS", "cc:user-apikeys:ann"}, {"HGETALL", "cc:user-sessions:ann"},
		{"HGETALL", "cc:user:{ann}"}, {"SMEMBERS", "cc:user-apikeys:{ann}"}, {"HGETALL", "cc:user-sessions:{ann}"},
		{"ZRANGE", "cc:owner-jobs:ann", "0", "-1"}, {"SMEMBERS", "cc:owner-active:ann"}, {"GET", "cc:idem:x"},
		{"GET", "rate:cc:login:ann:canary"}, {"DEL", "rate:cc:login:ann:canary"},
		// Lua runs with the caller's ACL: a script cannot reach further.
		{"EVAL", "return redis.call('HGETALL', 'cc:user:ann')", "0"},
		{"EVAL", "return redis.call('HGETALL', KEYS[1])", "1", "cc:user:ann"},
		{"EVAL", "return redis.call('PUBLISH', 'cc:revocations', 'all ')", "0"},
	}
	// The job-type registry: workers write it, the api only reads it.
	registryReads := [][]any{
		{"ZRANGE", "cc:{reg}:types", "0", "-1"}, {"HGET", "cc:{reg}:type:x", "spec"},
		{"ZCOUNT", "cc:{reg}:workers:x", "-inf", "+inf"},
	}
	registryWrites := [][]any{
		{"HSET", "cc:{reg}:type:x", "digest", "y"}, {"ZADD", "cc:{reg}:types", "1", "x"},
		{"DEL", "cc:{reg}:types"}, {"PEXPIRE", "cc:{reg}:type:x", "1"},
		{"EVAL", "return redis.call('ZADD', KEYS[1], 1, 'x')", "1", "cc:{reg}:workers:x"},
	}
	denied := map[string][][]any{
		"progress": append(append([][]any{
			{"SET", "cc:job:{canary}:canary", "2"}, // reads and cancels jobs; never sets a string
			{"LPUSH", "asynq:{default}:pending", "x"}, {"PUBLISH", "asynq:servers", "x"},
			{"XADD", "cc:user:ann:x", "*", "a", "b"},
			// It can read a job it is given the id of, never list ids.
			{"LRANGE", "asynq:{default}:pending", "0", "-1"}, {"ZRANGE", "asynq:{default}:scheduled", "0", "-1"},
			{"SMEMBERS", "asynq:queues"}, {"ZRANGE", "asynq:servers", "0", "-1"},
			{"EVAL", "return redis.call('LRANGE', KEYS[1], 0, -1)", "1", "asynq:{default}:pending"},
		}, append(everyone, append(registryReads, registryWrites...)...)...), identityKeys...),
		"worker": append(append([][]any{
			{"PUBLISH", "asynq:cancel", "x"}, {"PUBLISH", "cc:anything", "x"},
			{"SPUBLISH", "cc:revocations", "x"}, {"SPUBLISH", "asynq:{default}:x", "x"},
		}, everyone...), identityKeys...),
		"gateway": append([][]any{
			{"HGETALL", "cc:job:{canary}"}, {"GET", "cc:job:{canary}:canary"}, {"XRANGE", "cc:job:{x}:events", "-", "+"},
			{"LRANGE", "asynq:{default}:pending", "0", "-1"}, {"GET", "asynq:{default}:pending:canary"},
			{"SMEMBERS", "cc:users"}, {"SMEMBERS", "cc:user-apikeys:ann"}, {"GET", "cc:idem:x"},
			{"HGETALL", "cc:user:ann"}, {"HGETALL", "cc:user-sessions:ann"}, {"ZRANGE", "cc:apikey-index", "0", "-1"},
			{"HGETALL", "cc:user:{ann}"}, {"HGETALL", "cc:user-sessions:{ann}"}, {"SMEMBERS", "cc:user-apikeys:{ann}"},
			{"ZRANGE", "cc:owner-jobs:ann", "0", "-1"},
			{"SPUBLISH", "cc:job:{x}:ch", "x"}, {"PUBLISH", "cc:job:{x}:ch", "x"}, {"PUBLISH", "asynq:cancel", "x"},
			{"EVAL", "return redis.call('SPUBLISH', KEYS[1] .. ':ch', 'x')", "1", "cc:job:{x}"},
			{"EVAL", "return redis.call('HGETALL', 'cc:job:canary')", "0"},
		}, append(everyone, append(registryReads, registryWrites...)...)...),
		"api": append(append([][]any{{"PUBLISH", "asynq:servers", "x"}, {"SET", "other:key", "x"}, {"SET", "cc:other", "x"}},
			everyone[:len(everyone)-2]...), registryWrites...),
	}
	for user, cmds := range denied {
		c := r.as(t, user)
		for _, cmd := range cmds {
			err := c.Do(ctx, cmd...).Err()
			// Inside a script the refusal reads "The user executing the
			// script can't …" instead of NOPERM.
			if err == nil || !strings.Contains(err.Error(), "NOPERM") && !strings.Contains(err.Error(), "The user executing the script can't") {
				t.Errorf("%s %v: want NOPERM, got %v", user, cmd, err)
			}
		}
	}
	// Subscriptions: only the channels each process listens to. The worker
	// listens to key changes (cc:revocations) to publish a rotated receipt
	// key, and may not publish there (above).
	keyChanges := r.as(t, "worker").Subscribe(ctx, "cc:revocations")
	if _, err := keyChanges.Receive(ctx); err != nil {
		t.Errorf("worker SUBSCRIBE cc:revocations: %v", err)
	}
	keyChanges.Close()
	for user, channel := range map[string]string{
		"progress": "asynq:cancel", "worker": "cc:job:{x}:ch", "gateway": "cc:job:{x}:ch", "api": "cc:job:{x}:ch",
	} {
		ps := r.as(t, user).Subscribe(ctx, channel)
		if _, err := ps.Receive(ctx); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("%s SUBSCRIBE %s: want NOPERM, got %v", user, channel, err)
		}
		ps.Close()
	}
	// Shard channels (a job's events): only progress subscribes.
	for user, channel := range map[string]string{
		"progress": "asynq:cancel", "worker": "cc:job:{x}:ch", "gateway": "cc:job:{x}:ch", "api": "cc:job:{x}:ch",
	} {
		ps := r.as(t, user).SSubscribe(ctx, channel)
		if _, err := ps.Receive(ctx); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("%s SSUBSCRIBE %s: want NOPERM, got %v", user, channel, err)
		}
		ps.Close()
	}

	// Nothing changed: every canary is there, and no message was published
	// (a PING on the watching connection arrives after any message would).
	if n, err := r.admin.DBSize(ctx).Result(); err != nil || n != 6 {
		t.Errorf("the keyspace changed: %d keys (%v), want the 6 canaries", n, err)
	}
	if v, _ := r.admin.Get(ctx, "cc:job:{canary}:canary").Result(); v != "1" {
		t.Errorf("canary is %q", v)
	}
	if err := watch.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := watch.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m, ok := msg.(*redis.Message); ok {
			t.Errorf("a refused user published on %s: %q", m.Channel, m.Payload)
			continue
		}
		if _, ok := msg.(*redis.Pong); ok {
			break
		}
	}
}

// TestACLJobChannels: a job's events travel on its shard channel
// cc:job:{<id>}:ch. The progress user may SSUBSCRIBE to it (and SUBSCRIBE,
// the fallback on a server without shard channels), and what the worker
// and the api SPUBLISH there — from a script keyed on the job, as the job
// scripts do, or directly — reaches it.
func TestACLJobChannels(t *testing.T) {
	ctx := context.Background()
	r := startACLRedis(t)
	const ch = "cc:job:{x}:ch"
	shard := r.as(t, "progress").SSubscribe(ctx, ch)
	defer shard.Close()
	plain := r.as(t, "progress").Subscribe(ctx, ch)
	defer plain.Close()
	for _, ps := range []*redis.PubSub{shard, plain} {
		if _, err := ps.Receive(ctx); err != nil {
			t.Fatalf("progress subscribes to a job's channel: %v", err)
		}
	}
	for _, user := range []string{"worker", "api", "progress"} {
		c := r.as(t, user)
		if err := c.Eval(ctx, "return redis.call('SPUBLISH', KEYS[1] .. ':ch', ARGV[1])", []string{"cc:job:{x}"}, user+" script").Err(); err != nil {
			t.Errorf("%s SPUBLISH from a job script: %v", user, err)
		}
		if err := c.SPublish(ctx, ch, user).Err(); err != nil {
			t.Errorf("%s SPUBLISH: %v", user, err)
		}
		if err := c.Publish(ctx, ch, user+" plain").Err(); err != nil {
			t.Errorf("%s PUBLISH (the fallback): %v", user, err)
		}
		for _, want := range []string{user + " script", user} {
			msg, err := shard.ReceiveMessage(ctx)
			if err != nil || msg.Payload != want {
				t.Fatalf("shard subscriber got %v %v, want %q", msg, err, want)
			}
		}
		if msg, err := plain.ReceiveMessage(ctx); err != nil || msg.Payload != user+" plain" {
			t.Fatalf("subscriber got %v %v, want %q", msg, err, user+" plain")
		}
	}
}
