package jobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// InputLimits bound a job's input before its schema sees it. They exist
// because exact schema validation is not linear in the input: the schema
// library compares numbers as big.Rat, so the 9-byte literal 1e1000000
// costs ~45 ms to compare with a "maximum" (and an exponent past a million
// crashed it), and a body of them kept cores busy. Inside these limits the
// library's work is proportional to the input's size.
//
// A zero field takes its default (listed beside it); the catalog fills them
// in, so TypeSpec.InputLimits as served by GET /v1/job-types is what applies.
type InputLimits struct {
	// MaxBytes bounds the input's JSON text (default 64 KiB). The request
	// body may be larger (1 MiB by default): the envelope is not the input.
	MaxBytes int `json:"max_bytes"`
	// MaxDepth bounds nesting of objects and arrays, the input object
	// being depth 1 (default 32).
	MaxDepth int `json:"max_depth"`
	// MaxValues bounds how many JSON values the input holds in all, every
	// object, array, string, number, true, false and null counted, the
	// input object included (default 1024).
	MaxValues int `json:"max_values"`
	// MaxStringBytes bounds one string or member name, in bytes once
	// unescaped (default 16 KiB).
	MaxStringBytes int `json:"max_string_bytes"`
	// MaxNumberLength bounds one number literal, in characters (default
	// 24: the shortest spelling of any float64 takes at most 24, of any
	// int64 20).
	MaxNumberLength int `json:"max_number_length"`
}

// Defaults of InputLimits, applied field by field.
const (
	DefaultMaxInputBytes       = 64 << 10
	DefaultMaxInputDepth       = 32
	DefaultMaxInputValues      = 1024
	DefaultMaxInputStringBytes = 16 << 10
	DefaultMaxNumberLength     = 24
)

// MaxExponent bounds the written exponent of a number (the 400 of 1e400),
// whatever the limits: with it, exact arithmetic on any accepted literal is
// on numbers of at most a few thousand bits. Every float64 can be written
// within it; numbers past it are outside float64's range anyway.
const MaxExponent = 400

// WithDefaults returns l with every zero field set to its default.
func (l InputLimits) WithDefaults() InputLimits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxBytes, DefaultMaxInputBytes)
	def(&l.MaxDepth, DefaultMaxInputDepth)
	def(&l.MaxValues, DefaultMaxInputValues)
	def(&l.MaxStringBytes, DefaultMaxInputStringBytes)
	def(&l.MaxNumberLength, DefaultMaxNumberLength)
	return l
}

// CheckInput reports whether input is one JSON value within l (zero fields
// taking their defaults), as an *InputError locating the first breach by
// JSON Pointer. Workers call it before decoding a task's input, so a task
// that did not come through the API cannot make them burn CPU either.
func CheckInput(input json.RawMessage, l InputLimits) error {
	_, err := parseInput(input, l.WithDefaults())
	return err
}

// parseInput checks input against l (defaults applied) in one streaming pass
// and builds the document the schema library validates: the same tree
// jsonschema.UnmarshalJSON makes (maps, slices, json.Number, strings, bools,
// nil), so the library never parses the text itself. Its cost is linear in
// len(input), which is checked first.
//
// Besides the limits it refuses what parsers disagree about, so the schema,
// the worker's decoder and any other program reading the input see the same
// value: a member name given twice (encoding/json keeps the last, others the
// first), and numbers a float64 cannot hold (1e400 would be +Inf to a
// float64 decoder, 1e-400 zero, while the schema compares them exactly).
func parseInput(input json.RawMessage, l InputLimits) (any, error) {
	if len(input) > l.MaxBytes {
		return nil, inputErr("", fmt.Sprintf("input is %d bytes; this type takes at most %d", len(input), l.MaxBytes))
	}
	p := &inputParser{dec: json.NewDecoder(bytes.NewReader(input)), l: l}
	p.dec.UseNumber()
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	if _, err := p.dec.Token(); err != io.EOF {
		return nil, inputErr("", "not valid JSON: data after the input value")
	}
	return v, nil
}

// inputParser walks the token stream keeping the path to the current value,
// so a refusal can name it.
type inputParser struct {
	dec    *json.Decoder
	l      InputLimits
	path   []step // to the value being read
	values int
}

// step is one reference token: a member name, or an array index (key "",
// index ≥ 0), kept as an int so the pointer is spelled only on refusal.
type step struct {
	key   string
	index int
}

func (p *inputParser) pointer() string {
	var b strings.Builder
	for _, s := range p.path {
		b.WriteByte('/')
		if s.index >= 0 {
			b.WriteString(strconv.Itoa(s.index))
		} else {
			b.WriteString(pointerEscaper.Replace(s.key))
		}
	}
	return b.String()
}

// pointerEscaper escapes a reference token as RFC 6901 §3 says.
var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

func (p *inputParser) fail(detail string) error { return inputErr(p.pointer(), detail) }

func (p *inputParser) token() (json.Token, error) {
	t, err := p.dec.Token()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, p.fail("not valid JSON: " + err.Error())
	}
	return t, nil
}

// value reads one value (its first token not yet read).
func (p *inputParser) value() (any, error) {
	t, err := p.token()
	if err != nil {
		return nil, err
	}
	return p.valueFrom(t)
}

func (p *inputParser) valueFrom(t json.Token) (any, error) {
	if p.values++; p.values > p.l.MaxValues {
		return nil, p.fail(fmt.Sprintf("input holds more than %d values", p.l.MaxValues))
	}
	switch t := t.(type) {
	case json.Delim:
		if t != '{' && t != '[' {
			return nil, p.fail("not valid JSON: unexpected " + t.String())
		}
		// Depth is the count of containers open once this one is: the
		// path holds one token per container above this value.
		if len(p.path)+1 > p.l.MaxDepth {
			return nil, p.fail(fmt.Sprintf("nested deeper than %d", p.l.MaxDepth))
		}
		if t == '{' {
			return p.object()
		}
		return p.array()
	case string:
		if len(t) > p.l.MaxStringBytes {
			return nil, p.fail(fmt.Sprintf("string of %d bytes; at most %d", len(t), p.l.MaxStringBytes))
		}
		return t, nil
	case json.Number:
		if err := checkNumber(string(t), p.l.MaxNumberLength); err != nil {
			return nil, p.fail(err.Error())
		}
		return t, nil
	default: // bool, nil
		return t, nil
	}
}

func (p *inputParser) object() (any, error) {
	m := map[string]any{}
	for p.dec.More() {
		t, err := p.token()
		if err != nil {
			return nil, err
		}
		k, ok := t.(string)
		if !ok {
			return nil, p.fail("not valid JSON: member name is not a string")
		}
		p.path = append(p.path, step{key: k, index: -1})
		if len(k) > p.l.MaxStringBytes {
			return nil, p.fail(fmt.Sprintf("member name of %d bytes; at most %d", len(k), p.l.MaxStringBytes))
		}
		if _, dup := m[k]; dup {
			return nil, p.fail("member given twice")
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		m[k] = v
		p.path = p.path[:len(p.path)-1]
	}
	if _, err := p.token(); err != nil { // '}'
		return nil, err
	}
	return m, nil
}

func (p *inputParser) array() (any, error) {
	a := []any{}
	for i := 0; p.dec.More(); i++ {
		p.path = append(p.path, step{index: i})
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		a = append(a, v)
		p.path = p.path[:len(p.path)-1]
	}
	if _, err := p.token(); err != nil { // ']'
		return nil, err
	}
	return a, nil
}

// checkNumber bounds one number literal (already valid JSON): its length,
// its written exponent, and its value to float64's range.
func checkNumber(s string, maxLen int) error {
	if len(s) > maxLen {
		return fmt.Errorf("number of %d characters; at most %d", len(s), maxLen)
	}
	mant, exp, hasExp := strings.Cut(strings.ToLower(s), "e")
	if hasExp {
		// A JSON exponent is an optional sign and digits; leading zeros
		// are allowed, so trim them before judging its size.
		digits := strings.TrimLeft(strings.TrimLeft(exp, "+-"), "0")
		if e, err := strconv.Atoi(digits); digits != "" && (err != nil || e > MaxExponent) {
			return fmt.Errorf("exponent beyond ±%d", MaxExponent)
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("not a number: %w", err)
	}
	if err != nil || (f == 0 && strings.Trim(mant, "-0.") != "") {
		return errors.New("outside the range of a float64")
	}
	return nil
}

func inputErr(pointer, detail string) *InputError {
	return &InputError{Errors: []FieldError{{Pointer: pointer, Detail: detail}}}
}
