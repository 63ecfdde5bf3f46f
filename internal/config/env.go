package config

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// EnvName is the variable that may set a flag: REDIS_URL for --redis-url,
// CLAIMCHECK_<NAME> with dashes as underscores for the rest
// (CLAIMCHECK_DATA_DIR for --data-dir).
func EnvName(flag string) string {
	if flag == "redis-url" {
		return "REDIS_URL"
	}
	return "CLAIMCHECK_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// ApplyEnv sets every flag of fs not given on the command line from its
// environment variable, so the command line wins over the environment and
// the environment over defaults. Call it after parsing. A value that does
// not parse is an error naming the variable.
func ApplyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s: %w", EnvName(f.Name), serr)
			}
		}
	})
	return err
}

// AnnotateEnv adds each flag's variable to its help text (" [$REDIS_URL]").
// Call it once, after every flag of fs is bound.
func AnnotateEnv(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" {
			f.Usage += " [$" + EnvName(f.Name) + "]"
		}
	})
}
