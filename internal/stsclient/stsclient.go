package stsclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// RFC 8693 identifiers.
const (
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TypeJWT                = "urn:ietf:params:oauth:token-type:jwt"
	TypeIDToken            = "urn:ietf:params:oauth:token-type:id_token"
	TypeAccessToken        = "urn:ietf:params:oauth:token-type:access_token"
)

// Request is an RFC 8693 §2.1 token exchange request.
type Request struct {
	SubjectToken       string
	SubjectTokenType   string
	ActorToken         string
	ActorTokenType     string
	Audiences          []string
	Resources          []string
	Scopes             []string
	RequestedTokenType string
	ClientID           string
}

// Form encodes the request as the form body.
func (r Request) Form() url.Values {
	f := url.Values{
		"grant_type":         {GrantTypeTokenExchange},
		"subject_token":      {r.SubjectToken},
		"subject_token_type": {r.SubjectTokenType},
	}
	if r.ActorToken != "" {
		f.Set("actor_token", r.ActorToken)
		f.Set("actor_token_type", r.ActorTokenType)
	}
	for _, a := range r.Audiences {
		f.Add("audience", a)
	}
	for _, a := range r.Resources {
		f.Add("resource", a)
	}
	if len(r.Scopes) > 0 {
		f.Set("scope", strings.Join(r.Scopes, " "))
	}
	if r.RequestedTokenType != "" {
		f.Set("requested_token_type", r.RequestedTokenType)
	}
	if r.ClientID != "" {
		f.Set("client_id", r.ClientID)
	}
	return f
}

// Response is the RFC 8693 §2.2.1 success body.
type Response struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope,omitempty"`
}

// Error is an RFC 6749 §5.2 error answer.
type Error struct {
	Status      int    `json:"-"`
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func (e *Error) Error() string {
	if e.Description != "" {
		return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Description)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Code)
}

// maxResponse bounds what is read from the STS.
const maxResponse = 1 << 20

// Exchange posts req to tokenURL. A refusal is returned as *Error.
func Exchange(ctx context.Context, c *http.Client, tokenURL string, req Request) (*Response, error) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(req.Form().Encode()))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	hr.Header.Set("Accept", "application/json")
	resp, err := c.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(body, e) != nil || e.Code == "" {
			return nil, fmt.Errorf("token endpoint answered %s", resp.Status)
		}
		return nil, e
	}
	var out Response
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("token endpoint answered 200 with a malformed body: %w", err)
	}
	if out.AccessToken == "" {
		return nil, errors.New("token endpoint answered 200 without an access_token")
	}
	return &out, nil
}

// Verify validates tok for audience from the issuer's discovery and JWKS with
// go-oidc, as a downstream API does, and returns its claims. The `typ` header must
// be at+jwt (RFC 9068).
func Verify(ctx context.Context, c *http.Client, issuer, audience, tok string) (map[string]any, error) {
	if audience == "" {
		return nil, errors.New("an audience is required")
	}
	if err := checkType(tok); err != nil {
		return nil, err
	}
	ctx = oidc.ClientContext(ctx, c)
	p, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: audience}).Verify(ctx, tok)
	if err != nil {
		return nil, err
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, err
	}
	return claims, nil
}

// HTTPClient returns a client for the STS: TLS 1.2+, trusting caFile in addition to
// nothing else when given (else the system roots), with a total timeout.
func HTTPClient(caFile string, timeout time.Duration) (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", caFile)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

// checkType requires the RFC 9068 `typ` header (at+jwt), so that an ID token or
// another JWT from the same issuer is never taken for an access token.
func checkType(tok string) error {
	head, _, ok := strings.Cut(tok, ".")
	if !ok || len(head) > 4096 {
		return errors.New("not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return errors.New("not a compact JWS")
	}
	var h struct {
		Typ string `json:"typ"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return errors.New("not a compact JWS")
	}
	if t := strings.ToLower(h.Typ); t != "at+jwt" && t != "application/at+jwt" {
		return fmt.Errorf("typ %q is not at+jwt", h.Typ)
	}
	return nil
}
