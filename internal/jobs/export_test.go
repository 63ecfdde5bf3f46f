package jobs

// SetAfterAdmit makes s run f between a confirm's admission (the owner's
// slot) and its flip (the job's), so a test can land a block, a crash or
// another submission there.
func SetAfterAdmit(s *Store, f func(id string)) { s.afterAdmit = f }

// Test hooks for package jobs_test.

// Interleave has s call f after each one-slot step of its multi-step
// operations ("acquired" and "entered" in StartAttempt, "recorded" once an
// attempt's end is written and before its slot is released, "freed"
// between the two halves of a release, "checked" and "reconciled" in
// ReconcileReleasing), with the job's id, so that a test can act there
// as another process would.
func Interleave(s *Store, f func(step, id string)) { s.steps = f }
