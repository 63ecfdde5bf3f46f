// Package deploy holds no code: it is where the deployment files' tests
// live. compose.yaml (at the top of the repository), the Dockerfile and
// deploy/redis/users.acl are checked here — the compose file is loaded as
// Compose itself would (each service's mounts: no container reaches
// another process's private keys), the redis container's ACL script is
// run, and the Redis ACL is loaded into a real redis-server, where each
// user's refusals are proved and the product is run against its users.
package deploy
