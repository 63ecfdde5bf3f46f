package jobs

// SetAfterAdmit makes s run f between a confirm's admission (the owner's
// slot) and its flip (the job's), so a test can land a block, a crash or
// another submission there.
func SetAfterAdmit(s *Store, f func(id string)) { s.afterAdmit = f }
