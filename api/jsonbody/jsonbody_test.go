package jsonbody_test

import (
	"testing"

	"github.com/claimcheck/claimcheck/api/jsonbody"
)

func TestIsJSON(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/json":                  true,
		"Application/JSON":                  true,
		"application/json; charset=utf-8":   true,
		"application/json;charset=UTF-8":    true,
		"application/json; charset=utf-16":  false,
		"application/json; foo=bar":         false,
		"application/merge-patch+json":      false,
		"text/plain":                        false,
		"text/plain; charset=utf-8":         false,
		"application/x-www-form-urlencoded": false,
		"multipart/form-data; boundary=x":   false,
		"":                                  false,
		"application/jsonx":                 false,
		"application/json, text/plain":      false,
	} {
		if got := jsonbody.IsJSON(ct); got != want {
			t.Errorf("IsJSON(%q) = %v, want %v", ct, got, want)
		}
	}
}
