package tokens

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

const (
	privateSuffix = ".pem"
	publicSuffix  = ".pub.pem"
	activeFile    = "active"
)

// WriteKey saves k in dir: the private key (if any) as PKCS#8 PEM with mode
// 0600, the public key as PKIX PEM, each written to a temporary file and
// renamed so a reader never sees half a key. makeActive names k in the
// directory's "active" file.
func WriteKey(dir string, k *Key, makeActive bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("key dir: %w", err)
	}
	if k.Private != nil {
		der, err := x509.MarshalPKCS8PrivateKey(k.Private)
		if err != nil {
			return fmt.Errorf("encode private key: %w", err)
		}
		if err := writeAtomic(dir, k.ID+privateSuffix, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return err
		}
	}
	der, err := x509.MarshalPKIXPublicKey(k.Public)
	if err != nil {
		return fmt.Errorf("encode public key: %w", err)
	}
	if err := writeAtomic(dir, k.ID+publicSuffix, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		return err
	}
	if makeActive {
		if k.Private == nil {
			return errors.New("cannot make a key without a private half active")
		}
		return writeAtomic(dir, activeFile, []byte(k.ID+"\n"), 0o644)
	}
	return nil
}

func writeAtomic(dir, name string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(dir, ".tmp-"+name+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// LoadDir loads every key in dir. The active signer is the kid named in the
// "active" file, or the only private key when there is no such file; a
// directory of public keys only gives a verify-only set. A private key file
// that group or others can read is refused, as ssh does. A file whose name
// is not its key's kid is refused too: names are how operators retire keys.
func LoadDir(dir string) (*KeySet, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("key dir %s: %w", dir, err)
	}
	keys := map[string]*Key{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || !strings.HasSuffix(name, privateSuffix) {
			continue
		}
		path := filepath.Join(dir, name)
		if strings.HasSuffix(name, publicSuffix) {
			kid := strings.TrimSuffix(name, publicSuffix)
			pub, err := readPublic(path)
			if err != nil {
				return nil, err
			}
			if Thumbprint(pub) != kid {
				return nil, fmt.Errorf("%s: file name is not the key's kid %s", path, Thumbprint(pub))
			}
			if keys[kid] == nil {
				keys[kid] = &Key{ID: kid, Public: pub}
			}
			continue
		}
		kid := strings.TrimSuffix(name, privateSuffix)
		priv, err := readPrivate(path)
		if err != nil {
			return nil, err
		}
		pub := priv.Public().(ed25519.PublicKey)
		if Thumbprint(pub) != kid {
			return nil, fmt.Errorf("%s: file name is not the key's kid %s", path, Thumbprint(pub))
		}
		keys[kid] = &Key{ID: kid, Public: pub, Private: priv}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("key dir %s: no keys: %w", dir, fs.ErrNotExist)
	}
	var active *Key
	if b, err := os.ReadFile(filepath.Join(dir, activeFile)); err == nil {
		kid := strings.TrimSpace(string(b))
		active = keys[kid]
		if active == nil || active.Private == nil {
			return nil, fmt.Errorf("key dir %s: active key %s has no private key file", dir, kid)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("key dir %s: %w", dir, err)
	} else {
		for _, k := range keys {
			if k.Private != nil {
				if active != nil {
					return nil, fmt.Errorf("key dir %s: several private keys and no active file", dir)
				}
				active = k
			}
		}
	}
	others := make([]*Key, 0, len(keys))
	for _, k := range keys {
		if k != active {
			others = append(others, k)
		}
	}
	return NewKeySet(active, others...)
}

// EnsureDir loads dir, or, when it holds no keys at all, generates one,
// writes it as the active key and reports created. The dev command uses it
// so that a first run needs no set-up.
func EnsureDir(dir string) (ks *KeySet, created bool, err error) {
	ks, err = LoadDir(dir)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return ks, false, err
	}
	// Several replicas may start on one empty directory (a shared volume)
	// at once: they take turns, so the first generates the key and the
	// others load it, and all of them sign with one key.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("key dir: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, false, err
	}
	defer unlock()
	ks, err = LoadDir(dir)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return ks, false, err
	}
	k, err := GenerateKey()
	if err != nil {
		return nil, false, err
	}
	if err := WriteKey(dir, k, true); err != nil {
		return nil, false, err
	}
	ks, err = NewKeySet(k)
	return ks, err == nil, err
}

func readPrivate(path string) (ed25519.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("private key %s is readable by others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	block, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an Ed25519 key", path)
	}
	return priv, nil
}

func readPublic(path string) (ed25519.PublicKey, error) {
	block, err := readPEM(path, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an Ed25519 key", path)
	}
	return pub, nil
}

func readPEM(path, typ string) (*pem.Block, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != typ {
		return nil, fmt.Errorf("%s: no %q PEM block", path, typ)
	}
	return block, nil
}
