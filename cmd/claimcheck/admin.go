package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spf13/cobra"

	"github.com/claimcheck/claimcheck/internal/config"
	"github.com/claimcheck/claimcheck/internal/identity"
	"github.com/claimcheck/claimcheck/tokens"
)

func newKeys() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Manage Ed25519 signing keys"}
	var out string
	gen := &cobra.Command{
		Use:   "generate",
		Short: "Generate a signing key into a key directory and make it the active one",
		Long: `generate writes <kid>.pem (PKCS#8 private key, mode 0600) and <kid>.pub.pem
(public key) into --out, and names the new key in the directory's "active"
file. Older keys stay, so tokens they signed keep verifying until they expire.
The kid is the key's RFC 7638 thumbprint.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := tokens.GenerateKey()
			if err != nil {
				return err
			}
			if err := tokens.WriteKey(out, k, true); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "generated key %s in %s (active)\n", k.ID, out)
			return nil
		},
	}
	gen.Flags().StringVar(&out, "out", filepath.Join(".claimcheck", "keys", "jobs"), "key directory")
	var dir string
	list := &cobra.Command{
		Use:   "list",
		Short: "List the keys in a key directory (public information only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ks, err := tokens.LoadDir(dir)
			if err != nil {
				return err
			}
			active := ""
			if k, err := ks.Signer(); err == nil {
				active = k.ID
			}
			for _, kid := range ks.KIDs() {
				mark := ""
				if kid == active {
					mark = "  (active)"
				}
				fmt.Fprintln(cmd.OutOrStdout(), kid+mark)
			}
			return nil
		},
	}
	list.Flags().StringVar(&dir, "dir", filepath.Join(".claimcheck", "keys", "jobs"), "key directory")
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Add a new signing key and make it active; the old one keeps verifying",
		Long: `rotate writes a new key into --dir and makes it the active signer. The
previous key stays in the directory and in the JWKS, so tokens it signed keep
verifying until they expire; retire it after that with "keys retire KID".

With REDIS_URL set, running processes are told at once: they reload their key
directories and the gateway drops its cached tokens.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := rotateKeys(cmd.OutOrStdout(), dir); err != nil {
				return err
			}
			return announceKeyChange(cmd)
		},
	}
	rotate.Flags().StringVar(&dir, "dir", filepath.Join(".claimcheck", "keys", "jobs"), "key directory (the gateway's: DATA_DIR/keys/gateway)")
	retire := &cobra.Command{
		Use:   "retire KID",
		Short: "Remove a key that no longer signs; tokens it signed stop verifying",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := retireKey(cmd.OutOrStdout(), dir, args[0]); err != nil {
				return err
			}
			return announceKeyChange(cmd)
		},
	}
	retire.Flags().StringVar(&dir, "dir", filepath.Join(".claimcheck", "keys", "jobs"), "key directory")
	cmd.AddCommand(gen, list, rotate, retire)
	return cmd
}

func rotateKeys(w io.Writer, dir string) (*tokens.Key, error) {
	k, prev, err := tokens.RotateDir(dir)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "new active key %s in %s\n", k.ID, dir)
	if prev != "" {
		fmt.Fprintf(w, "previous key %s still verifies; once its tokens have expired: claimcheck keys retire --dir %s -- %s\n", prev, dir, prev)
	}
	return k, nil
}

func retireKey(w io.Writer, dir, kid string) error {
	if err := tokens.RetireKey(dir, kid); err != nil {
		return err
	}
	fmt.Fprintf(w, "retired %s from %s\n", kid, dir)
	return nil
}

// announceKeyChange tells running processes to reload their keys, when
// there is a Redis to tell them through.
func announceKeyChange(cmd *cobra.Command) error {
	url := os.Getenv("REDIS_URL")
	if url == "" {
		fmt.Fprintln(cmd.ErrOrStderr(), "REDIS_URL not set: restart the services (or they reload on their next reconnect)")
		return nil
	}
	if err := config.CheckRedisPassword(url, config.AllowExampleFromEnv()); err != nil {
		return fmt.Errorf("key changed on disk, but running services were not told: %w", err)
	}
	r, err := config.OpenRedis(cmd.Context(), url)
	if err != nil {
		return fmt.Errorf("key changed on disk, but running services were not told: %w", err)
	}
	defer r.Close()
	if err := identity.NewRevocations(r.Client).Announce(cmd.Context(), identity.Revocation{Kind: identity.RevokedAll}); err != nil {
		return fmt.Errorf("key changed on disk, but running services were not told: %w", err)
	}
	fmt.Fprintln(cmd.ErrOrStderr(), "running services told to reload their keys")
	return nil
}

func newAPIKeys() *cobra.Command {
	var c common
	cmd := &cobra.Command{
		Use:   "apikeys",
		Short: "Create, list and revoke API keys (stored hashed in Redis)",
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.load(cmd); err != nil {
				return err
			}
			return requireRedis(c.cfg, "apikeys")
		},
	}
	c.bind(cmd.PersistentFlags(), false)
	config.AnnotateEnv(cmd.PersistentFlags())
	var users *identity.Users
	open := func(cmd *cobra.Command) (*identity.APIKeys, func(), error) {
		r, err := config.OpenRedis(cmd.Context(), c.cfg.RedisURL)
		if err != nil {
			return nil, nil, err
		}
		users = identity.NewUsers(r.Client, nil, nil)
		return identity.NewAPIKeys(r.Client, nil), r.Close, nil
	}
	var user, name string
	var scopes []string
	var expiresIn time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an API key for a user and print it once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, done, err := open(cmd)
			if err != nil {
				return err
			}
			defer done()
			// A key for a user who does not exist would act for whoever is
			// added under that name later.
			if _, err := users.Get(cmd.Context(), user); err != nil {
				return fmt.Errorf("%w (add them first: claimcheck users add)", err)
			}
			spec := identity.KeySpec{User: user, Name: name, Scopes: scopes, Operator: true}
			if expiresIn > 0 {
				spec.ExpiresAt = time.Now().Add(expiresIn)
			}
			s, k, err := keys.CreateKey(cmd.Context(), spec)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "created API key %s for %s; it is shown once and stored only as a hash:\n", k.ID, k.User)
			fmt.Fprintln(cmd.OutOrStdout(), s.Reveal())
			return nil
		},
	}
	create.Flags().StringVar(&user, "user", "", "user the key acts for (required)")
	create.Flags().StringVar(&name, "name", "", "a label for the key")
	create.Flags().StringSliceVar(&scopes, "scope", nil, "what the key may do: jobs:submit, jobs:read (default both); jobs:priority lets it submit at high priority")
	create.Flags().DurationVar(&expiresIn, "expires-in", 0, "end the key on its own after this long (e.g. 720h; default never)")
	_ = create.MarkFlagRequired("user")
	list := &cobra.Command{
		Use:   "list",
		Short: "List API keys (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, done, err := open(cmd)
			if err != nil {
				return err
			}
			defer done()
			all, err := keys.List(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tPREFIX\tUSER\tNAME\tSCOPES\tCREATED\tLAST USED\tEXPIRES")
			for _, k := range all {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Prefix, k.User, k.Name, strings.Join(k.Scopes, ","),
					k.CreatedAt.Format(time.RFC3339), orNever(k.LastUsed), orNever(k.ExpiresAt))
			}
			return tw.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API key; the next request with it is refused",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, done, err := open(cmd)
			if err != nil {
				return err
			}
			defer done()
			if err := keys.Revoke(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func newToken() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Debug job tokens"}
	var jwksURL, keyDir string
	inspect := &cobra.Command{
		Use:   "inspect TOKEN|-",
		Short: "Decode and verify a job token and print its header and claims",
		Long: `inspect verifies a job token against the api's JWKS (--jwks-url) or a key
directory (--key-dir) and prints its header and claims. Pass - to read the
token from standard input and keep it out of shell history. A token that does
not verify is still decoded, marked "verified": false, with the reason.
Signing keys are never printed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := readToken(cmd.InOrStdin(), args[0])
			if err != nil {
				return err
			}
			var keys tokens.KeySource
			switch {
			case jwksURL != "":
				keys, err = tokens.NewRemoteKeys(cmd.Context(), jwksURL, nil)
			default:
				keys, err = tokens.LoadDir(keyDir)
			}
			if err != nil {
				return err
			}
			return inspectToken(cmd.OutOrStdout(), keys, tok)
		},
	}
	inspect.Flags().StringVar(&jwksURL, "jwks-url", "", "verify against this JWKS URL")
	inspect.Flags().StringVar(&keyDir, "key-dir", filepath.Join(".claimcheck", "keys", "jobs"), "verify against the keys in this directory")
	cmd.AddCommand(inspect)
	return cmd
}

func readToken(in io.Reader, arg string) (string, error) {
	if arg != "-" {
		return strings.TrimSpace(arg), nil
	}
	line, err := bufio.NewReader(io.LimitReader(in, tokens.MaxTokenSize+2)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("read token: %w", err)
	}
	return strings.TrimSpace(line), nil
}

func inspectToken(w io.Writer, keys tokens.KeySource, tok string) error {
	report := map[string]any{}
	claims, verr := (&tokens.Verifier{Keys: keys}).VerifyJob(tok)
	if verr == nil {
		report["verified"] = true
		report["claims"] = claims
	} else {
		report["verified"] = false
		report["error"] = verr.Error()
	}
	// Decoding for display only: nothing here is trusted unless verified.
	if len(tok) <= tokens.MaxTokenSize {
		if t, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{}); err == nil {
			report["header"] = t.Header
			if verr != nil {
				report["unverified_claims"] = t.Claims
			}
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(report); err != nil {
		return err
	}
	if verr != nil {
		return fmt.Errorf("token does not verify: %w", verr)
	}
	return nil
}

func orNever(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}
