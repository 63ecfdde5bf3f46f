package worker

// Test hooks for package worker_test.

// StoreChecks is how many results-store checks s has finished.
func StoreChecks(s *Server) int64 { return s.health.checks.Load() }

// OpsHandler is the worker process's operations server.
var OpsHandler = opsHandler
