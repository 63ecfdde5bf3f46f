package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/claimcheck/claimcheck/app"
	"github.com/claimcheck/claimcheck/internal/config"
	"github.com/claimcheck/claimcheck/internal/identity"
)

func newUsers() *cobra.Command {
	var c common
	var r *config.Redis
	cmd := &cobra.Command{
		Use:   "users",
		Short: "Add, list, block and unblock users, and set passwords",
		Long: `users manages the people who sign in. Passwords are hashed with argon2id.
User names are case-insensitive and kept in lower case: "users add ANN"
adds ann, who signs in as ann or ANN.
Blocking a user ends every session and API key they have at once; jobs they
already submitted keep running, and those jobs' tokens keep working until
they expire (a job token proves one job, it is not a credential of the user).`,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			r, err = c.loadShared(cmd, "users")
			return err
		},
		PersistentPostRun: func(*cobra.Command, []string) {
			if r != nil {
				r.Close()
			}
		},
	}
	c.bind(cmd.PersistentFlags(), false)
	config.AnnotateEnv(cmd.PersistentFlags())
	dir := func() *identity.Directory { return app.Identity(c.cfg, r.Client) }

	var fromStdin bool
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a user (password from --password-stdin or a prompt)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := readPassword(cmd, fromStdin)
			if err != nil {
				return err
			}
			if err := dir().Users.Add(cmd.Context(), args[0], pw); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added user %s\n", canonical(args[0]))
			return nil
		},
	}
	add.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of standard input")
	passwd := &cobra.Command{
		Use:   "passwd NAME",
		Short: "Set a user's password (from --password-stdin or a prompt)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := readPassword(cmd, fromStdin)
			if err != nil {
				return err
			}
			if err := dir().Users.SetPassword(cmd.Context(), args[0], pw); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "password of %s changed\n", canonical(args[0]))
			return nil
		},
	}
	passwd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of standard input")
	list := &cobra.Command{
		Use:   "list",
		Short: "List users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			users, err := dir().Users.List(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tBLOCKED\tCREATED")
			for _, u := range users {
				fmt.Fprintf(tw, "%s\t%v\t%s\n", u.Name, u.Blocked, u.CreatedAt.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	var cancelJobs, revokeJobTokens bool
	block := &cobra.Command{
		Use:   "block NAME",
		Short: "Block a user: end all their sessions and API keys now",
		Long: `block ends every session and API key of the user at once and refuses their
password. Their queued and running jobs carry on, and those jobs' tokens keep
working until they expire, unless --cancel-jobs is given: then every job of
theirs that has not ended is cancelled too. With --revoke-job-tokens every
job token and download link of every job of theirs stops working as well:
use it when the account was taken over, since a thief with a session could
have re-issued job tokens, which outlive the session by design.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := canonical(args[0])
			if err := dir().Block(cmd.Context(), name); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "blocked %s; their sessions and API keys are revoked\n", name)
			if cancelJobs {
				n, err := app.CancelUserJobs(cmd.Context(), c.cfg, r.Client, name)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "cancelled %d active jobs of %s\n", n, name)
			}
			if revokeJobTokens {
				n, err := app.RevokeUserJobTokens(cmd.Context(), r.Client, name)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "revoked the job tokens of %d jobs of %s\n", n, name)
			}
			return nil
		},
	}
	block.Flags().BoolVar(&cancelJobs, "cancel-jobs", false, "also cancel the user's queued and running jobs")
	block.Flags().BoolVar(&revokeJobTokens, "revoke-job-tokens", false, "also revoke every job token and download link of the user's jobs")
	unblock := &cobra.Command{
		Use:   "unblock NAME",
		Short: "Let a blocked user sign in again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := dir().Unblock(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "unblocked %s\n", canonical(args[0]))
			return nil
		},
	}
	migrate := &cobra.Command{
		Use:   "migrate-layout",
		Short: "Move user keys of a release before cluster support to their tagged names (run once, api stopped)",
		Long: `migrate-layout renames the user records and credential indexes an older release
kept (cc:user:ann, cc:user-sessions:ann, cc:user-apikeys:ann) to the names
that keep one user's keys in one Redis Cluster slot (cc:user:{ann} ...).
Sessions and API keys made before the upgrade keep working either way; until
this runs, their users are unknown and blocking them misses those credentials.
Run it once after upgrading, before starting the new api; running it again
does nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := identity.MigrateKeyLayout(cmd.Context(), r.Client)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "moved %d keys\n", m.Moved)
			for _, u := range m.Kept {
				fmt.Fprintf(cmd.OutOrStdout(), "kept the old record of %s (cc:user:%s): a new one exists\n", u, u)
			}
			return nil
		},
	}
	cmd.AddCommand(add, passwd, list, block, unblock, migrate)
	return cmd
}

// canonical is the stored form of a user name (lower case), for messages
// and for lookups outside the identity package; an invalid name is left as
// it is, for the store to refuse.
func canonical(name string) string {
	if c, ok := identity.CanonicalUserName(name); ok {
		return c
	}
	return name
}

// readPassword takes the first line of stdin with --password-stdin, or
// prompts without echo when stdin is a terminal.
func readPassword(cmd *cobra.Command, fromStdin bool) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(io.LimitReader(cmd.InOrStdin(), identity.MaxPasswordLen+2)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read password: %w", err)
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", errors.New("no terminal to prompt on: pass --password-stdin and pipe the password in")
	}
	fmt.Fprint(cmd.ErrOrStderr(), "Password: ")
	pw, err := term.ReadPassword(fd)
	fmt.Fprintln(cmd.ErrOrStderr())
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	return string(pw), nil
}
