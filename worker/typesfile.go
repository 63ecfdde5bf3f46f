package worker

import "errors"

// TypesFromFile loads job types that run programs (the exec protocol) from
// a YAML or JSON types file; `--types FILE` of `claimcheck worker`,
// `claimcheck dev` and every Main program calls it.
//
// Placeholder: the exec part of issue 11 replaces this body.
func TypesFromFile(path string) ([]Type, error) {
	return nil, errors.New("types files are not supported yet")
}
