package config

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/safeconduct/safeconduct/revocation"
	"github.com/safeconduct/safeconduct/revocation/storeguard"
)

// storeName names the revocation store in logs (never a credential).
func (c *Config) storeName() string {
	if c.Revocation.Backend == "redis" {
		r := c.Revocation.Redis
		name := "redis " + strings.Join(r.Addrs, ",")
		if r.MasterName != "" {
			name += " master " + r.MasterName
		}
		return name
	}
	return "embedded " + c.Path(c.Revocation.Embedded.Path)
}

// identityFile is where the store's identity is remembered outside it:
// revocation.identity_file, by default <embedded.path>.id for the embedded store
// and nothing (memory only) for Redis.
func (c *Config) identityFile() string {
	if c.Revocation.IdentityFile != "" {
		return c.Path(c.Revocation.IdentityFile)
	}
	if c.Revocation.Backend == "redis" {
		return ""
	}
	return c.Path(c.Revocation.Embedded.Path) + ".id"
}

// openGuardedStore opens the store and wraps it in a storeguard.Guard, which
// refuses everything while the store is known to have lost its data.
func openGuardedStore(cfg *Config, o Options) (revocation.Store, error) {
	st, err := openStore(cfg, o)
	if err != nil {
		return nil, err
	}
	g, err := storeguard.New(st, storeguard.Options{
		Name: cfg.storeName(), IdentityFile: cfg.identityFile(), Logger: o.Logger, Now: o.Now,
	})
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	return g, nil
}

// AcceptStoreLoss is `sts revocation-store accept-loss`: it records the
// operator's acknowledgement that the revocation store lost its data, so that
// the STS serves from what the store holds now. Redis: a new identity written
// into the store (every running STS adopts it within its check interval) and into
// revocation.identity_file when set. Embedded: the identity file only (the
// running STS holds the bbolt file), which the STS reads within its check
// interval, or at its next start.
func AcceptStoreLoss(ctx context.Context, cfg *Config, now time.Time) (revocation.Identity, error) {
	var ids revocation.Identified
	if cfg.Revocation.Backend == "redis" {
		st, err := openStore(cfg, Options{Now: time.Now})
		if err != nil {
			return revocation.Identity{}, err
		}
		defer st.Close()
		ids = st.(revocation.Identified)
	}
	id, err := storeguard.AcceptLoss(ctx, ids, cfg.identityFile(), now)
	if err != nil {
		return id, fmt.Errorf("%s: %w", cfg.storeName(), err)
	}
	return id, nil
}
