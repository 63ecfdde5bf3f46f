package redisconn

import "time"

// SetClock makes m read the time from now, for tests of its timing rules.
func SetClock(m *Monitor, now func() time.Time) { m.now = now }
