package config

import (
	"fmt"
	"time"

	"github.com/safeconduct/safeconduct/issuer"
)

// StatusListsConfig is the status_lists section: Token Status Lists
// (draft-ietf-oauth-status-list-20), on by default. Every minted token then
// carries status.status_list {idx, uri} and any replica serves the list at
// <issuer>/statuslists/<name>.
type StatusListsConfig struct {
	// Enabled turns status lists off with false (tokens then carry no status
	// claim, as before). Default true.
	Enabled *bool `yaml:"enabled"`
	// TTL is the ttl claim of the Status List Tokens: how long a consumer may
	// cache a list; a replica re-evaluates a list it serves every ttl/2. Default
	// 30s, between 1s and 60s (a revocation shows in every replica's list
	// within ttl/2, in a consumer's copy within ttl more).
	TTL Duration `yaml:"ttl"`
	// Size is the number of indices of one list: a power of two from 1024 to
	// 16777216 (2^24). Default 1048576 (2^20: 128 KiB of bits before
	// compression).
	Size int `yaml:"size"`
	// RotateAfter is how long a replica issues into one list before opening the
	// next (a full list is rotated at once). Default 10m, between 1m and 1h.
	RotateAfter Duration `yaml:"rotate_after"`
}

// On reports whether status lists are on.
func (c *StatusListsConfig) On() bool { return c.Enabled == nil || *c.Enabled }

func (c *StatusListsConfig) validate(v *validator) {
	if !c.On() {
		if c.TTL != 0 || c.Size != 0 || c.RotateAfter != 0 {
			v.at("status_lists.enabled is false: remove the other status_lists keys, or enable it", "status_lists", "enabled")
		}
		return
	}
	if c.TTL != 0 && (c.TTL < Duration(time.Second) || c.TTL > Duration(time.Minute)) {
		v.at("status_lists.ttl must be between 1s and 60s", "status_lists", "ttl")
	}
	if c.Size != 0 && (c.Size < issuer.MinStatusListSize || c.Size > issuer.MaxStatusListSize || c.Size&(c.Size-1) != 0) {
		v.at(fmt.Sprintf("status_lists.size must be a power of two from %d to %d", issuer.MinStatusListSize, issuer.MaxStatusListSize), "status_lists", "size")
	}
	if c.RotateAfter != 0 && (c.RotateAfter < Duration(time.Minute) || c.RotateAfter > Duration(time.Hour)) {
		v.at("status_lists.rotate_after must be between 1m and 1h", "status_lists", "rotate_after")
	}
}

// issuer returns the issuer's configuration; nil when off.
func (c *StatusListsConfig) issuer() *issuer.StatusListConfig {
	if !c.On() {
		return nil
	}
	return &issuer.StatusListConfig{TTL: c.TTL.D(), Size: c.Size, RotateAfter: c.RotateAfter.D()}
}
