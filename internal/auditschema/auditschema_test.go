package auditschema

import (
	"strings"
	"testing"
)

const good = `{"time":"2026-12-07T14:00:00.123Z","level":"INFO","msg":"exchange","log":"audit","event":"exchange","outcome":"issued",` +
	`"client_addr":"127.0.0.1","upstream":"cluster-a","sub":"s","rule":"r","jti":"j","exp":1,"aud":["https://a"],` +
	`"subject_token_sha256":"abc_-","schema_version":1,"event_id":"01a250d8-c06e-7d31-867b-a21d7a3b355e","request_id":"req-1"}`

// TestSchemaRejects: the schema is not vacuous: each broken event is refused
// by the validator, the good one accepted.
func TestSchemaRejects(t *testing.T) {
	if err := Validate([]byte(good)); err != nil {
		t.Fatalf("good event refused: %v", err)
	}
	cases := map[string][2]string{
		"no event_id":          {`"event_id":"01a250d8-c06e-7d31-867b-a21d7a3b355e",`, ``},
		"event_id not a UUID":  {`"event_id":"01a250d8-c06e-7d31-867b-a21d7a3b355e"`, `"event_id":"x"`},
		"schema_version 2":     {`"schema_version":1`, `"schema_version":2`},
		"issued without jti":   {`"jti":"j",`, ``},
		"refused with jti":     {`"outcome":"issued"`, `"outcome":"refused","error":"invalid_request"`},
		"unknown outcome":      {`"outcome":"issued"`, `"outcome":"maybe"`},
		"request_id spaces":    {`"request_id":"req-1"`, `"request_id":"a b"`},
		"no request_id":        {`,"request_id":"req-1"`, ``},
		"aud not an array":     {`"aud":["https://a"]`, `"aud":"https://a"`},
		"time not a date-time": {`"time":"2026-12-07T14:00:00.123Z"`, `"time":"yesterday"`},
		"trace_id short":       {`"request_id":"req-1"`, `"request_id":"req-1","trace_id":"abc"`},
		"user_agent too long":  {`"request_id":"req-1"`, `"request_id":"req-1","user_agent":"` + strings.Repeat("a", 257) + `"`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			bad := strings.Replace(good, c[0], c[1], 1)
			if bad == good {
				t.Fatal("edit did not apply")
			}
			if err := Validate([]byte(bad)); err == nil {
				t.Fatalf("accepted: %s", bad)
			}
		})
	}
	kinds, errs := ValidateLines(good + "\n" + `{"log":"audit","event":"block"}` + "\n" + `{"msg":"not audit"}` + "\n")
	if len(errs) != 1 || kinds["exchange"] != 1 {
		t.Fatalf("ValidateLines: kinds %v, errors %v", kinds, errs)
	}
}
