package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/claimcheck/claimcheck/internal/scripts"
)

// A job's log is the job's own output (Go handlers' Task.Logf, exec types'
// stderr), kept beside its record for the job-token holder:
//
//   - lines are numbered from 1 in the order the job wrote them; a number
//     is never reused, so "after line N" is a stable resume point, and a
//     gap in the numbers is lines not kept;
//   - the log keeps the newest MaxLogLines lines and at most MaxLogBytes of
//     line text, whichever is reached first; older lines are dropped and
//     counted ("dropped"), and a reader that asks for lines before the
//     oldest kept is told how many it missed;
//   - a line is at most MaxLogLineBytes bytes of valid UTF-8 without a
//     newline: longer ones are cut and end with a "[… N bytes cut]" mark;
//   - a worker that could not keep up (its buffer full) drops its oldest
//     unsent lines; their numbers are skipped, so readers see the gap;
//   - the log expires with the record: every append gives it the record's
//     TTL, and the script that ends a job gives it the retention it gives
//     the record (finishScript). Lines for a record that is gone are not
//     kept.
//
// Appends are one script per batch (AppendLog), which also publishes
// "<job id> 0-0 log <last line number>" on the job's channel: a wake-up for
// live followers, who then read the lines from the log, so the channel
// carries a few bytes per batch however long the lines are.
const (
	// MaxLogLines is how many lines a job's log keeps.
	MaxLogLines = 10_000
	// MaxLogBytes bounds the text of the lines a job's log keeps (1 MiB).
	MaxLogBytes = 1 << 20
	// MaxLogLineBytes bounds one line, its cut mark included (4 KiB).
	MaxLogLineBytes = 4 << 10
)

// EventLog is the type of the job channel message that announces new
// log lines; its data is the last line number. It is never in the event log.
const EventLog = "log"

// LogLine is one line of a job's log.
type LogLine struct {
	// N numbers the line, from 1; zero in a line not yet kept.
	N    int64
	Time time.Time
	Text string
}

// CutLogLine makes s a storable line: valid UTF-8, newlines and carriage
// returns turned into spaces, at most MaxLogLineBytes bytes (a longer line
// keeps its start and ends with a mark saying how many bytes were cut).
func CutLogLine(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
	}
	if len(s) <= MaxLogLineBytes {
		return s
	}
	// The mark is at most 32 bytes; keep what fits before it, whole runes.
	keep := MaxLogLineBytes - 32
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + "[… " + strconv.Itoa(len(s)-keep) + " bytes cut]"
}

var appendLogScript = scripts.New(`
-- KEYS[1] job record, KEYS[2] its log, KEYS[3] its log counters
-- ARGV[1] lines the writer dropped before this batch, ARGV[2] now ms,
-- ARGV[3..] pairs of (time ms, line)
-- returns the last line number, or -1 when the record is gone
local ttl = redis.call("PTTL", KEYS[1])
if ttl == -2 then return -1 end
local meta = redis.call("HMGET", KEYS[3], "n", "bytes")
local n = tonumber(meta[1] or "0")
local bytes = tonumber(meta[2] or "0")
local dropped = tonumber(ARGV[1])
local function add(t, line)
  n = n + 1
  redis.call("XADD", KEYS[2], n .. "-0", "t", t, "l", line)
  bytes = bytes + #line
end
-- Lines the writer dropped keep their numbers: the gap tells readers.
n = n + dropped
for i = 3, #ARGV, 2 do add(ARGV[i], ARGV[i + 1]) end
-- Drop the oldest lines until the log is within both caps.
local excess = redis.call("XLEN", KEYS[2]) - ` + strconv.Itoa(MaxLogLines) + `
local trimmed, upto, from = 0, 0, "-"
while excess > 0 or bytes > ` + strconv.Itoa(MaxLogBytes) + ` do
  -- Usually the batch's own length (the line cap); more only while the
  -- byte cap needs it.
  local want = 64
  if excess > 0 and bytes <= ` + strconv.Itoa(MaxLogBytes) + ` then want = excess end
  local old = redis.call("XRANGE", KEYS[2], from, "+", "COUNT", math.min(want, 1024))
  if #old == 0 then break end
  for _, e in ipairs(old) do
    if excess <= 0 and bytes <= ` + strconv.Itoa(MaxLogBytes) + ` then break end
    local f = e[2]
    for j = 1, #f, 2 do if f[j] == "l" then bytes = bytes - #f[j + 1] end end
    excess, trimmed = excess - 1, trimmed + 1
    upto, from = tonumber(string.match(e[1], "^%d+")), "(" .. e[1]
  end
end
-- Ids are "<line number>-0": MINID drops every line up to upto.
if trimmed > 0 then redis.call("XTRIM", KEYS[2], "MINID", (upto + 1) .. "-0") end
redis.call("HSET", KEYS[3], "n", n, "bytes", bytes)
if dropped + trimmed > 0 then redis.call("HINCRBY", KEYS[3], "dropped", dropped + trimmed) end
if ttl > 0 then
  redis.call("PEXPIRE", KEYS[2], ttl)
  redis.call("PEXPIRE", KEYS[3], ttl)
end
` + publishLua + `publish(` + jobIDLua + ` .. " 0-0 ` + EventLog + ` " .. n)
return n
`)

// AppendLog keeps lines (their N ignored) at the end of job id's log in one
// script, numbered after the dropped lines the writer lost before them,
// and announces them to live followers. Each line is passed
// through CutLogLine. It returns the last line number; ErrGone when the
// job's record no longer exists (nothing is kept).
func (s *Store) AppendLog(ctx context.Context, id string, lines []LogLine, dropped int) (int64, error) {
	args := make([]any, 0, 2+2*len(lines))
	args = append(args, dropped, ms(s.now()))
	for _, l := range lines {
		args = append(args, ms(l.Time), CutLogLine(l.Text))
	}
	n, err := appendLogScript.Run(ctx, s.rdb, []string{jobKey(id), logKey(id), logMetaKey(id)}, args...).Int64()
	if err != nil {
		return 0, fmt.Errorf("log of job %s: %w", id, err)
	}
	if n < 0 {
		return 0, fmt.Errorf("log of job %s: %w", id, ErrGone)
	}
	return n, nil
}

// LogPage is a read of a job's log.
type LogPage struct {
	// Lines are the lines after the one asked for, oldest first.
	Lines []LogLine
	// Skipped counts lines after the one asked for that are not kept and
	// come before Lines (a gap between two of Lines is lines not kept too).
	Skipped int64
	// Last is the number of the newest line the log has had (0: none yet).
	Last int64
	// Dropped counts every line the log did not keep.
	Dropped int64
}

// Next is the line number to resume after: the last line of the page, or
// after itself when the page is empty.
func (p *LogPage) Next(after int64) int64 {
	if n := len(p.Lines); n > 0 {
		return p.Lines[n-1].N
	}
	return max(after, 0)
}

// LogAfter reads up to limit lines of job id's log after line number after
// (0: from the start), in one transaction. It does not look at the job's
// record: the caller has (a log outlives no record, but a record may have a
// log not started yet).
func (s *Store) LogAfter(ctx context.Context, id string, after int64, limit int) (*LogPage, error) {
	start := "-"
	if after > 0 {
		start = "(" + strconv.FormatInt(after, 10) + "-0"
	}
	cmds, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XRangeN(ctx, logKey(id), start, "+", int64(limit))
		p.HMGet(ctx, logMetaKey(id), "n", "dropped")
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("log of job %s: %w", id, err)
	}
	msgs := cmds[0].(*redis.XMessageSliceCmd).Val()
	meta := cmds[1].(*redis.SliceCmd).Val()
	page := &LogPage{Lines: make([]LogLine, 0, len(msgs))}
	page.Last = metaInt(meta[0])
	page.Dropped = metaInt(meta[1])
	for _, m := range msgs {
		num, _, _ := strings.Cut(m.ID, "-")
		n, _ := strconv.ParseInt(num, 10, 64)
		t, _ := m.Values["t"].(string)
		tm, _ := strconv.ParseInt(t, 10, 64)
		text, _ := m.Values["l"].(string)
		page.Lines = append(page.Lines, LogLine{N: n, Time: time.UnixMilli(tm).UTC(), Text: text})
	}
	switch {
	case len(page.Lines) > 0:
		page.Skipped = page.Lines[0].N - max(after, 0) - 1
	case page.Last > after:
		page.Skipped = page.Last - max(after, 0) // all of them gone (expired mid-read)
	}
	return page, nil
}

func metaInt(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// LogLast is the number of the newest line job id's log has had (0: none
// yet): one small read, which tells a reader whether a page it read before
// is still the log's (pages of an unchanged log are the same).
func (s *Store) LogLast(ctx context.Context, id string) (int64, error) {
	v, err := s.rdb.HGet(ctx, logMetaKey(id), "n").Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("log of job %s: %w", id, err)
	}
	return metaInt(v), nil
}
