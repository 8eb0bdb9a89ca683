package issuer

import (
	"log/slog"
	"sync/atomic"

	"github.com/safeconduct/safeconduct/revocation"
)

// Internals the external tests (package issuer_test, which assemble servers with
// package config) use.

const (
	CodeInvalidRequest         = codeInvalidRequest
	CodeInvalidClient          = codeInvalidClient
	CodeInvalidScope           = codeInvalidScope
	CodeInvalidTarget          = codeInvalidTarget
	CodeTemporarilyUnavailable = codeTemporarilyUnavailable
	CodeUnsupportedGrantType   = codeUnsupportedGrantType
	MaxBodyBytes               = maxBodyBytes
	KeyRetireSkew              = keyRetireSkew
	TracerName                 = tracerName
	SpanAdmit                  = spanAdmit
	SpanAttestActor            = spanAttestActor
	SpanAttestSubject          = spanAttestSubject
	SpanMint                   = spanMint
	SpanPolicy                 = spanPolicy
)

var (
	ErrClientAuth      = errClientAuth
	ErrSubjectRejected = errSubjectRejected
	GenerateKey        = generateKey
	ReadKeys           = readKeys
	NewMinter          = newMinter
	NewTokenID         = newTokenID
	TokenHash          = tokenHash
)

type (
	Claims       = claims
	ConnIdentity = connIdentity
	ConnKey      = connKey
)

// RevocationStore is the server's (instrumented) revocation store.
func (s *Server) RevocationStore() revocation.Store { return s.store }

// SetAuditLogger replaces the audit log (benchmarks discard it).
func (s *Server) SetAuditLogger(l *slog.Logger) { s.auditLog = l }

// StopOverloadTicks stops the overload gate's ticker and returns the smallest
// queue age it observed since (ns; MaxInt64 for none).
func (s *Server) StopOverloadTicks() *atomic.Int64 {
	s.limits.gate.close()
	return &s.limits.gate.minAge
}

// File is the key's file in the key directory.
func (k *signingKey) File() string { return k.file }

// Mint signs c.
func (m *minter) Mint(c *claims) (string, error) { return m.mint(c) }
