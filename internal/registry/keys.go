package registry

// Every Redis key of the registry is built here, so the ACL rules in
// deploy/redis/users.acl (workers write cc:{reg}:*, the api reads it) can
// be read off one file.
//
// All of them carry the hash tag {reg}: they live in one Redis Cluster
// slot, so the announce and withdraw scripts, which touch the index and
// several types' keys at once, stay valid on a cluster. The registry is a
// few keys per job type, small enough for one slot.
const (
	// KeyPrefix is the common prefix, for the ACL patterns.
	KeyPrefix = "cc:{reg}:"
	// KeyIndex is a sorted set of every type name announced within the
	// forget window, scored by when a worker last announced or withdrew
	// it (Unix ms). It is how the api lists types in one read.
	KeyIndex = KeyPrefix + "types"
	// KeyPrefixType prefixes a hash per type: "digest" (of the canonical
	// spec) and "spec" (its JSON). It expires Forget after the last
	// heartbeat.
	KeyPrefixType = KeyPrefix + "type:"
	// KeyVersion is a counter the announce script bumps whenever it writes
	// a spec not announced before (a new type, or a changed one): an api
	// asked for a type it does not know checks it (one GET) before it
	// reads the whole registry again.
	KeyVersion = KeyPrefix + "version"
	// KeyPrefixWorkers prefixes a sorted set per type of the ids of the
	// workers announcing it, each scored by when its heartbeat runs out
	// (Unix ms): a member past its score is dead and no longer counted.
	KeyPrefixWorkers = KeyPrefix + "workers:"
)

func typeKey(name string) string    { return KeyPrefixType + name }
func workersKey(name string) string { return KeyPrefixWorkers + name }
