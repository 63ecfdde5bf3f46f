package main

import (
	"fmt"
	"strings"
	"unicode"
)

// termSafe shows s's control characters escaped (ESC as \x1b, U+009B as
// \u009b), tabs and newlines aside, and the invisible bidirectional
// overrides too. A job's log lines, progress message and error are its
// program's output, shaped by whoever wrote its input: printed raw to a
// terminal, an escape sequence could set the window title, write the
// clipboard (OSC 52), or hide and rewrite what was printed.
func termSafe(s string) string {
	if !strings.ContainsFunc(s, unsafeRune) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case !unsafeRune(r):
			b.WriteRune(r)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	if r == '\t' || r == '\n' {
		return false
	}
	return unicode.IsControl(r) || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069
}
