// Package config is how a claimcheck process reads its settings: flags,
// with CLAIMCHECK_<FLAG> and REDIS_URL environment variables filling the
// ones not given (EnvName, ApplyEnv, AnnotateEnv), the logger those
// settings ask for (NewLogger), the refusal of Redis passwords that ship as
// examples (CheckRedisPassword), the Redis connection itself (OpenRedis),
// and the worker process's settings (Worker), which `claimcheck worker` and
// worker.Main both bind so that they read identical flags.
//
// It is the bottom of the import graph: it imports no claimcheck package
// but other internal/ ones (never api/, worker/, app/, tokens/, web/ or
// client/). That is what lets both the public worker SDK (worker.Main) and
// the wiring at the top (app, cmd/claimcheck) use one configuration without
// an arrow pointing up: the public packages depend on it, it depends on
// nothing of theirs. A setting whose default belongs to a public package is
// declared here and referred to from there (DefaultMaxRunningJobs).
package config
