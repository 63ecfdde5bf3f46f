package identity

// Every Redis key this package touches is built here. The progress service's
// Redis ACL user is denied all of these (cc:apikey*), which is why none of
// them share a prefix with job records.
const (
	// KeyPrefixAPIKey prefixes API key records, addressed by the SHA-256 of
	// the secret: a hash {id, user, name, created, last_used}.
	KeyPrefixAPIKey = "cc:apikey:"
	// KeyPrefixAPIKeyID maps a key id to the SHA-256 of its secret, so a key
	// can be listed and revoked without knowing the secret.
	KeyPrefixAPIKeyID = "cc:apikey-id:"
	// KeyAPIKeyIndex is a sorted set of key ids by creation time.
	KeyAPIKeyIndex = "cc:apikey-index"
)

func apiKeyKey(hash string) string { return KeyPrefixAPIKey + hash }
func apiKeyIDKey(id string) string { return KeyPrefixAPIKeyID + id }
