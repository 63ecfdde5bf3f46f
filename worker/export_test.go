package worker

import "time"

// Test hooks for package worker_test.

// StoreChecks is how many results-store checks s has finished.
func StoreChecks(s *Server) int64 { return s.health.checks.Load() }

// OpsHandler is the worker process's operations server.
var OpsHandler = opsHandler

// SetReconcilerClock has s's reconciler read the time from now; call it
// before Start.
func SetReconcilerClock(s *Server, now func() time.Time) { s.now = now }

// ReconcilePasses is how many reconcile passes s has finished.
func ReconcilePasses(s *Server) int64 { return s.passes.Load() }
