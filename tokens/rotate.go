package tokens

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
)

// Replace swaps in from's keys and active key at once, so everything that
// holds s — minters, verifiers, JWKS handlers — sees the new set without a
// restart.
func (s *KeySet) Replace(from *KeySet) {
	from.mu.RLock()
	keys, active := from.keys, from.active
	from.mu.RUnlock()
	s.mu.Lock()
	s.keys, s.active = keys, active
	s.mu.Unlock()
}

// ReloadDir loads dir again into ks (see LoadDir); ks is unchanged when
// loading fails.
func ReloadDir(ks *KeySet, dir string) error {
	fresh, err := LoadDir(dir)
	if err != nil {
		return err
	}
	ks.Replace(fresh)
	return nil
}

// RotateDir generates a key in dir and makes it the active signer. The
// previous active key (previousActive, "" if none) stays in dir, so tokens
// it signed keep verifying until they expire; retire it after that.
func RotateDir(dir string) (newKey *Key, previousActive string, err error) {
	if old, err := LoadDir(dir); err == nil {
		if k, err := old.Signer(); err == nil {
			previousActive = k.ID
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, "", err
	}
	k, err := GenerateKey()
	if err != nil {
		return nil, "", err
	}
	if err := WriteKey(dir, k, true); err != nil {
		return nil, "", err
	}
	return k, previousActive, nil
}

// ErrActiveKey means the key to retire is the one that signs.
var ErrActiveKey = errors.New("the active key cannot be retired; rotate first")

// kidPattern is a base64url SHA-256 thumbprint: exactly what a kid is, and
// nothing that could leave the directory as a file name.
var kidPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

// RetireKey removes key kid from dir: tokens it signed stop verifying once
// the processes reload (they do on the `keys` revocation message). The
// active key cannot be retired.
func RetireKey(dir, kid string) error {
	if !kidPattern.MatchString(kid) {
		return fmt.Errorf("retire %q: not a key id (an RFC 7638 thumbprint)", kid)
	}
	if ks, err := LoadDir(dir); err == nil {
		if k, err := ks.Signer(); err == nil && k.ID == kid {
			return fmt.Errorf("retire %s: %w", kid, ErrActiveKey)
		}
	}
	found := false
	for _, name := range []string{kid + privateSuffix, kid + publicSuffix} {
		err := os.Remove(filepath.Join(dir, name))
		if err == nil {
			found = true
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("retire %s: %w", kid, err)
		}
	}
	if !found {
		return fmt.Errorf("retire %s: no such key in %s: %w", kid, dir, fs.ErrNotExist)
	}
	return nil
}
