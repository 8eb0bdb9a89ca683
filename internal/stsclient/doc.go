// Package stsclient is the small RFC 8693 client and token verifier shared by stsctl
// and `sts quickstart`: it sends an exchange request and validates a minted token
// exactly as a downstream API would, from the STS's discovery document and JWKS
// (go-oidc).
//
//	resp, err := stsclient.Exchange(ctx, httpClient, "https://sts.example/token", stsclient.Request{
//		SubjectToken: tok, SubjectTokenType: stsclient.TypeJWT, Audiences: []string{"https://api"},
//	})
//	claims, err := stsclient.Verify(ctx, httpClient, "https://sts.example", "https://api", resp.AccessToken)
package stsclient
