package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Event types, as the SSE stream names them.
const (
	EventProgress = "progress" // {"percent","message"}
	EventState    = "state"    // {"state","attempts"?,"error"?}
	EventDone     = "done"     // {"state","error"?,"result"?}: the last one
	// EventRevoked is published, never logged or sent to clients, when a
	// job's tokens are revoked: {"epoch"}.
	EventRevoked = "revoked"
)

// Event announcements. Every change to a job is announced, from inside the
// script that made it, on the job's own channel JobChannel(id) =
// "cc:job:{<id>}:ch", as "<job id> <event id> <type> <json>"
// (ParseEventMessage): the logged events (emitLua), and two that are never
// logged, new log lines (EventLog) and revocations (EventRevoked), with
// event id "0-0".
//
// The channel is a shard channel (SPUBLISH): on a Redis Cluster a plain
// PUBLISH is broadcast to every node over the cluster bus and reaches every
// subscriber of the cluster, whereas a shard channel lives on the primary
// (and replicas) of its slot and reaches only those who SSUBSCRIBEd to it.
// The channel carries the job's hash tag, so it is in the slot of the
// job's keys, and publishing from the job's script is legal on a cluster.
// A progress process subscribes to the channels of the jobs it serves only
// (api/progress Hub): what it receives grows with the jobs it watches, not
// with the jobs of the whole cluster.
//
// A server without shard channels (Redis before 7, the embedded dev server)
// refuses SPUBLISH as an unknown command; the script then PUBLISHes on the
// same channel name, and the hub, whose SSUBSCRIBE is refused the same way,
// SUBSCRIBEs: same channel, same messages, broadcast semantics. Any other
// refusal (an ACL, a wrong slot) fails the script as before.
//
// A message can be lost (a subscription cut, a slot moving); the event log
// is the truth, and every subscriber resynchronises from it after each
// (re)subscription.

// publishLua defines publish(msg), which announces msg on the channel of
// the job in KEYS[1] (a JobKey). Scripts that announce without logging call
// it; emitLua does for logged events.
var publishLua = `
local function publish(msg)
  local ch = KEYS[1] .. "` + KeySuffixChannel + `"
  local r = redis.pcall("SPUBLISH", ch, msg)
  if type(r) == "table" and r.err then
    if not string.find(string.lower(r.err), "unknown", 1, true) then
      redis.call("SPUBLISH", ch, msg) -- fail the script with the real error
    end
    redis.call("PUBLISH", ch, msg)
  end
end
`

// emitLua defines emit(type, json) for the scripts that change a job: it
// appends the event to the job's stream (KEYS[2]), capped and expiring with
// the record, and announces it on the job's channel, all inside the script
// that made the change, so no event is lost or told twice and workers pay
// no extra round trip.
var emitLua = publishLua + `
local function emit(kind, data)
  local id = redis.call("XADD", KEYS[2], "MAXLEN", "~", "256", "*", "type", kind, "data", data)
  local ttl = redis.call("PTTL", KEYS[1])
  if ttl > 0 then redis.call("PEXPIRE", KEYS[2], ttl) end
  publish(` + jobIDLua + ` .. " " .. id .. " " .. kind .. " " .. data)
  return id
end
`

// Event is one entry of a job's event log.
type Event struct {
	// ID is the stream entry id ("<ms>-<seq>"), the SSE event id.
	ID   string
	Type string
	// Data is the event's JSON.
	Data string
}

// ParseEventMessage reads a message of a job's channel (JobChannel).
func ParseEventMessage(msg string) (jobID string, ev Event, ok bool) {
	var ok1, ok2, ok3 bool
	var rest string
	jobID, rest, ok1 = strings.Cut(msg, " ")
	ev.ID, rest, ok2 = strings.Cut(rest, " ")
	ev.Type, ev.Data, ok3 = strings.Cut(rest, " ")
	return jobID, ev, ok1 && ok2 && ok3 && jobID != ""
}

// ErrEventsTrimmed means the events after a given id are no longer all in
// the log; the reader must start from a snapshot.
var ErrEventsTrimmed = errors.New("event log no longer reaches back that far")

// EventsAfter returns job id's logged events after the event id after
// (a stream id this store handed out). ErrEventsTrimmed when that event is
// no longer in the log (capped or expired), so some after it may be lost.
func (s *Store) EventsAfter(ctx context.Context, id, after string) ([]Event, error) {
	if !ValidEventID(after) {
		return nil, ErrEventsTrimmed
	}
	start := "-"
	if after != "0-0" { // "0-0" is the snapshot id of a job with no events yet
		start = after
	}
	// Read from the client's last event inclusive: if that event is no
	// longer in the log, the ones after it may have been trimmed too.
	msgs, err := s.rdb.XRange(ctx, eventsKey(id), start, "+").Result()
	if err != nil {
		return nil, fmt.Errorf("events of job %s: %w", id, err)
	}
	if start != "-" {
		if len(msgs) == 0 || msgs[0].ID != after {
			return nil, ErrEventsTrimmed
		}
		msgs = msgs[1:]
	}
	return toEvents(msgs), nil
}

// Snapshot reads a job's record and the id of its latest event in one
// transaction, so an event after that id is a change after the record.
func (s *Store) Snapshot(ctx context.Context, id string) (*Job, string, error) {
	cmds, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HGetAll(ctx, jobKey(id))
		p.XRevRangeN(ctx, eventsKey(id), "+", "-", 1)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, "", fmt.Errorf("snapshot job %s: %w", id, err)
	}
	j, err := fromHash(cmds[0].(*redis.MapStringStringCmd).Val())
	if err != nil {
		return nil, "", fmt.Errorf("snapshot job %s: %w", id, err)
	}
	last := "0-0"
	if msgs := cmds[1].(*redis.XMessageSliceCmd).Val(); len(msgs) > 0 {
		last = msgs[0].ID
	}
	return j, last, nil
}

func toEvents(msgs []redis.XMessage) []Event {
	out := make([]Event, 0, len(msgs))
	for _, m := range msgs {
		t, _ := m.Values["type"].(string)
		d, _ := m.Values["data"].(string)
		out = append(out, Event{ID: m.ID, Type: t, Data: d})
	}
	return out
}

// ValidEventID reports whether s looks like a stream id ("<ms>-<seq>").
func ValidEventID(s string) bool {
	ms, seq, ok := strings.Cut(s, "-")
	_, err1 := strconv.ParseUint(ms, 10, 64)
	_, err2 := strconv.ParseUint(seq, 10, 64)
	return ok && err1 == nil && err2 == nil
}

// CompareEventIDs orders two valid stream ids.
func CompareEventIDs(a, b string) int {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	x, _ := strconv.ParseUint(am, 10, 64)
	y, _ := strconv.ParseUint(bm, 10, 64)
	if x != y {
		if x < y {
			return -1
		}
		return 1
	}
	x, _ = strconv.ParseUint(as, 10, 64)
	y, _ = strconv.ParseUint(bs, 10, 64)
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}
