package membership

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// GenerateKey returns a new random 32-byte (AES-256) gossip key.
func GenerateKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("membership: generate key: %w", err)
	}
	return k, nil
}

// ParseKey decodes a gossip key written in standard base64 (as by
// base64.StdEncoding.EncodeToString(GenerateKey())). Surrounding white space is ignored.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("membership: empty gossip key")
	}
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("membership: gossip key is not valid standard base64: %w", err)
	}
	if err := checkKey(k); err != nil {
		return nil, err
	}
	return k, nil
}

func checkKey(k []byte) error {
	switch len(k) {
	case 16, 24, 32:
		return nil
	case 0:
		return errors.New("membership: a gossip key is required")
	default:
		return fmt.Errorf("membership: gossip key is %d bytes, want 16, 24 or 32 (AES-128, -192 or -256)", len(k))
	}
}
