package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/claimcheck/claimcheck/internal/execjob"
	"github.com/claimcheck/claimcheck/internal/jobs"
)

// TypesFromFile loads exec job types — programs in any language — from a
// types file (claimcheck worker --types FILE). The file is YAML, or JSON of
// the same shape:
//
//	types:
//	  - name: wordcount                       # required; letters, digits, '.', '_', '-'
//	    description: Counts the words of a text.
//	    command: ["python3", "examples/exec/wordcount.py"]   # required; argv, no shell
//	    input_schema: {type: object}          # JSON Schema, a mapping or a JSON string ({"type":"object"})
//	    content_type: application/json        # of the result (application/octet-stream)
//	    timeout: 10m                          # required; a Go duration, at least 1s
//	    max_timeout: 1h                       # what a request may ask for (timeout)
//	    max_retry: 2                          # retries of a failed attempt (0)
//	    max_result_bytes: 10485760            # (0: the worker's limit)
//	    pool: default                         # [a-z0-9][a-z0-9_-]{0,31} ("default")
//	    workdir: .                            # (the worker's working directory)
//	    env: {LANG: C.UTF-8}                  # added to the program's environment
//	    kill_grace: 10s                       # SIGTERM to SIGKILL on cancel or timeout (10s)
//
// The program speaks the exec protocol of package internal/execjob (input
// on stdin, result on stdout, log and "::progress" lines on stderr, exit 65
// for bad input; see README "Your own job types").
//
// Paths: a relative workdir is relative to the directory the worker was
// started in, and is made absolute (and must exist) at load. command[0]
// with a '/' is a path relative to workdir; without one it is looked up in
// the worker's PATH at load; either way it must be an executable file, and
// the resolved path is what runs. Durations are Go durations ("90s",
// "10m", "1h30m"). env keys are environment variable names; env may
// override the variables the program inherits (PATH, HOME, LANG, …), but
// not CLAIMCHECK_* (the runner sets CLAIMCHECK_JOB_ID and
// CLAIMCHECK_ATTEMPT itself).
//
// A file that does not load is refused whole, with an error naming the
// file, the type (by name, or by position when it has none) and the field:
//
//	types.yaml: type "wordcount": timeout: "10 minutes" is not a duration
//
// Unknown fields and duplicate keys are errors, as are two types of one name.
func TypesFromFile(path string) ([]Type, error) {
	if !execjob.Supported {
		return nil, fmt.Errorf("%s: exec job types need a Unix system (process groups)", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("types file: %w", err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("%s: working directory: %w", path, err)
	}
	types, err := parseTypes(b, cwd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return types, nil
}

// maxTypesFile bounds a types file; one is a few kilobytes.
const maxTypesFile = 4 << 20

// typeFields are the fields of one entry, in the order of the doc.
var typeFields = []string{"name", "description", "command", "input_schema", "content_type", "timeout", "max_timeout",
	"max_retry", "max_result_bytes", "pool", "workdir", "env", "kill_grace"}

var (
	typeNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	envKeyRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

func parseTypes(b []byte, cwd string) ([]Type, error) {
	if len(b) > maxTypesFile {
		return nil, fmt.Errorf("larger than %d bytes", maxTypesFile)
	}
	var doc any
	if err := yaml.UnmarshalWithOptions(b, &doc, yaml.Strict()); err != nil {
		return nil, errors.New(yaml.FormatError(err, false, false))
	}
	top, ok := doc.(map[string]any)
	if !ok {
		return nil, errors.New(`want a mapping with a "types" list`)
	}
	for k := range top {
		if k != "types" {
			return nil, fmt.Errorf("unknown field %q (want only \"types\")", k)
		}
	}
	list, ok := top["types"].([]any)
	if !ok {
		return nil, errors.New("types: want a list of job types")
	}
	if len(list) == 0 {
		return nil, errors.New("types: the list is empty")
	}
	types := make([]Type, 0, len(list))
	seen := map[string]int{}
	for i, item := range list {
		e := entry{label: fmt.Sprintf("type #%d", i+1)}
		m, ok := item.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: want a mapping of fields", e.label)
		}
		e.m = m
		if name, ok := m["name"].(string); ok && name != "" {
			e.label = fmt.Sprintf("type %q", name)
		}
		t, err := e.parse(cwd)
		if err != nil {
			return nil, err
		}
		if j, dup := seen[t.Name]; dup {
			return nil, fmt.Errorf("%s: name: declared twice (types #%d and #%d)", e.label, j+1, i+1)
		}
		seen[t.Name] = i
		types = append(types, t)
	}
	return types, nil
}

// entry is one element of the types list.
type entry struct {
	label string
	m     map[string]any
}

func (e entry) errorf(field, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %s", e.label, field, fmt.Sprintf(format, args...))
}

func (e entry) str(field string) (string, error) {
	v, ok := e.m[field]
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", e.errorf(field, "%v is not a string", v)
	}
	if strings.ContainsRune(s, 0) {
		return "", e.errorf(field, "contains a NUL byte")
	}
	return s, nil
}

func (e entry) duration(field string) (time.Duration, error) {
	v, ok := e.m[field]
	if !ok || v == nil {
		return 0, nil
	}
	s, ok := v.(string)
	if !ok {
		return 0, e.errorf(field, `%v is not a duration (write it like "90s" or "10m")`, v)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, e.errorf(field, `%q is not a duration (write it like "90s" or "10m")`, s)
	}
	if d <= 0 {
		return 0, e.errorf(field, "%s: must be positive", s)
	}
	return d, nil
}

func (e entry) integer(field string) (int64, error) {
	switch v := e.m[field].(type) {
	case nil:
		return 0, nil
	case uint64:
		if v > math.MaxInt64 {
			return 0, e.errorf(field, "%d is too large", v)
		}
		return int64(v), nil
	case int64:
		return v, nil
	case int:
		return int64(v), nil
	default:
		return 0, e.errorf(field, "%v is not a whole number", v)
	}
}

func (e entry) parse(cwd string) (Type, error) {
	for _, k := range slices.Sorted(mapKeys(e.m)) {
		if !slices.Contains(typeFields, k) {
			return Type{}, fmt.Errorf("%s: unknown field %q (known: %s)", e.label, k, strings.Join(typeFields, ", "))
		}
	}
	var t Type
	var err error
	if t.Name, err = e.str("name"); err != nil {
		return Type{}, err
	}
	if t.Name == "" {
		return Type{}, e.errorf("name", "required")
	}
	if !typeNameRE.MatchString(t.Name) {
		return Type{}, e.errorf("name", "%q: use letters, digits, '.', '_' and '-'", t.Name)
	}
	if t.Description, err = e.str("description"); err != nil {
		return Type{}, err
	}

	if t.Timeout, err = e.duration("timeout"); err != nil {
		return Type{}, err
	}
	if t.Timeout == 0 {
		return Type{}, e.errorf("timeout", `required (a duration like "10m")`)
	}
	if t.Timeout < time.Second {
		// Asynq keeps a task's timeout in whole seconds.
		return Type{}, e.errorf("timeout", "%s: must be at least 1s", t.Timeout)
	}
	if t.MaxTimeout, err = e.duration("max_timeout"); err != nil {
		return Type{}, err
	}
	if t.MaxTimeout != 0 && t.MaxTimeout < t.Timeout {
		return Type{}, e.errorf("max_timeout", "%s is less than timeout %s", t.MaxTimeout, t.Timeout)
	}
	killGrace, err := e.duration("kill_grace")
	if err != nil {
		return Type{}, err
	}
	if killGrace == 0 {
		killGrace = execjob.DefaultKillGrace
	}
	n, err := e.integer("max_retry")
	if err != nil {
		return Type{}, err
	}
	if n < 0 || n > math.MaxInt32 {
		return Type{}, e.errorf("max_retry", "%d: must be 0 or more", n)
	}
	t.MaxRetry = int(n)
	if t.MaxResultBytes, err = e.integer("max_result_bytes"); err != nil {
		return Type{}, err
	}
	if t.MaxResultBytes < 0 {
		return Type{}, e.errorf("max_result_bytes", "%d: must be 0 (the worker's limit) or more", t.MaxResultBytes)
	}
	if t.Pool, err = e.str("pool"); err != nil {
		return Type{}, err
	}
	if t.Pool != "" {
		if jobs.ValidPool(t.Pool) != nil {
			return Type{}, e.errorf("pool", "%q: want 1 to 32 of a-z, 0-9, '_' and '-', starting with a letter or digit", t.Pool)
		}
	}
	if t.ContentType, err = e.str("content_type"); err != nil {
		return Type{}, err
	}
	if t.ContentType == "" {
		t.ContentType = "application/octet-stream"
	}
	if _, _, err := mime.ParseMediaType(t.ContentType); err != nil {
		return Type{}, e.errorf("content_type", "%q: %v", t.ContentType, err)
	}
	if t.InputSchema, err = e.schema(t); err != nil {
		return Type{}, err
	}

	dir, err := e.workdir(cwd)
	if err != nil {
		return Type{}, err
	}
	args, path, err := e.command(dir)
	if err != nil {
		return Type{}, err
	}
	env, err := e.env()
	if err != nil {
		return Type{}, err
	}
	prog := &execjob.Program{
		Path: path, Args: args, Dir: dir, Env: execjob.Environ(os.Environ(), env),
		ContentType: t.ContentType, KillGrace: killGrace,
	}
	t.Handle = execHandler(prog, t.InputLimits)
	// After shutdown hands a job back, the program gets SIGTERM, then
	// SIGKILL after its grace, and its output is drained; Shutdown waits
	// that long for it, so that no program outlives the worker.
	t.stopGrace = killGrace + execjob.DefaultDrainTimeout + time.Second
	return t, nil
}

func mapKeys(m map[string]any) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// schema is the entry's input_schema as JSON, compiled once to check it.
func (e entry) schema(t Type) (json.RawMessage, error) {
	var raw json.RawMessage
	switch v := e.m["input_schema"].(type) {
	case nil:
		return nil, nil
	case string:
		if !json.Valid([]byte(v)) {
			return nil, e.errorf("input_schema", "not valid JSON")
		}
		raw = json.RawMessage(v)
	case map[string]any:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, e.errorf("input_schema", "%v", err)
		}
		raw = b
	default:
		return nil, e.errorf("input_schema", "want a JSON Schema object")
	}
	t.InputSchema = raw
	if _, err := jobs.NewCatalog(t.spec()); err != nil {
		if inner := errors.Unwrap(err); inner != nil {
			err = inner
		}
		return nil, e.errorf("input_schema", "%v", err)
	}
	return raw, nil
}

func (e entry) workdir(cwd string) (string, error) {
	dir, err := e.str("workdir")
	if err != nil {
		return "", err
	}
	if dir == "" {
		dir = cwd
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(cwd, dir)
	}
	dir = filepath.Clean(dir)
	fi, err := os.Stat(dir)
	if err != nil {
		return "", e.errorf("workdir", "%v", err)
	}
	if !fi.IsDir() {
		return "", e.errorf("workdir", "%s is not a directory", dir)
	}
	return dir, nil
}

// command is the argv and the resolved path of the program.
func (e entry) command(dir string) ([]string, string, error) {
	list, ok := e.m["command"].([]any)
	if !ok || len(list) == 0 {
		if v, present := e.m["command"]; present && v != nil && !ok {
			return nil, "", e.errorf("command", `want a list of strings (argv, no shell): ["python3", "job.py"]`)
		}
		return nil, "", e.errorf("command", `required: a list of strings (argv, no shell)`)
	}
	args := make([]string, len(list))
	for i, v := range list {
		s, ok := v.(string)
		if !ok {
			return nil, "", e.errorf("command", "[%d]: %v is not a string", i, v)
		}
		if strings.ContainsRune(s, 0) {
			return nil, "", e.errorf("command", "[%d]: contains a NUL byte", i)
		}
		args[i] = s
	}
	if args[0] == "" {
		return nil, "", e.errorf("command", "[0]: the program is empty")
	}
	path := args[0]
	if strings.Contains(path, "/") {
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		fi, err := os.Stat(path)
		if err != nil {
			return nil, "", e.errorf("command", "[0]: %v", err)
		}
		if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return nil, "", e.errorf("command", "[0]: %s is not an executable file", path)
		}
		return args, path, nil
	}
	found, err := exec.LookPath(path)
	if err != nil {
		return nil, "", e.errorf("command", "[0]: %v", err)
	}
	if !filepath.IsAbs(found) {
		if found, err = filepath.Abs(found); err != nil {
			return nil, "", e.errorf("command", "[0]: %v", err)
		}
	}
	return args, found, nil
}

func (e entry) env() (map[string]string, error) {
	v, ok := e.m["env"]
	if !ok || v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, e.errorf("env", "want a mapping of variable names to strings")
	}
	env := make(map[string]string, len(m))
	for k, v := range m {
		if !envKeyRE.MatchString(k) {
			return nil, e.errorf("env", "%q is not a variable name", k)
		}
		if strings.HasPrefix(k, execjob.Reserved) {
			return nil, e.errorf("env", "%s: %s* is set by the worker", k, execjob.Reserved)
		}
		s, ok := v.(string)
		if !ok {
			return nil, e.errorf("env", "%s: %v is not a string (quote it)", k, v)
		}
		if strings.ContainsRune(s, 0) {
			return nil, e.errorf("env", "%s: contains a NUL byte", k)
		}
		env[k] = s
	}
	return env, nil
}

// execHandler runs prog for each attempt.
func execHandler(prog *execjob.Program, limits InputLimits) Handler {
	return func(ctx context.Context, t *Task) error {
		// The same second line of defence as Decode: the program parses
		// the input itself, so it gets none the API would have refused.
		if err := jobs.CheckInput(t.Input(), jobs.InputLimits(limits)); err != nil {
			return fmt.Errorf("input: %v: %w", err, ErrPermanent)
		}
		err := prog.Run(ctx, execTask{t})
		if xe, ok := errors.AsType[*execjob.ExitError](err); ok && xe.Permanent() {
			return permanentError{err}
		}
		return err
	}
}

// permanentError is err, marked ErrPermanent without changing its message.
type permanentError struct{ err error }

func (e permanentError) Error() string   { return e.err.Error() }
func (e permanentError) Unwrap() []error { return []error{e.err, ErrPermanent} }

// execTask is a *Task seen through execjob.Task.
type execTask struct{ t *Task }

func (x execTask) ID() string                                   { return x.t.ID() }
func (x execTask) Attempt() int                                 { return x.t.Attempt() }
func (x execTask) Input() []byte                                { return x.t.Input() }
func (x execTask) Progress(percent float64, message string)     { x.t.Progress(percent, message) }
func (x execTask) Log(line string)                              { x.t.Logf("%s", line) }
func (x execTask) Result(contentType string) (io.Writer, error) { return x.t.Result(contentType) }
func (x execTask) Checkpoint() []byte                           { return x.t.Checkpoint() }
func (x execTask) SaveCheckpoint(data []byte) error             { return x.t.SaveCheckpoint(data) }
