// Command stsctl is the safeconduct client and admin CLI.
//
//	stsctl exchange --sts URL --subject-token @FILE --audience A [--scope S] ...
//	stsctl verify --issuer URL --audience A --token @FILE
//	stsctl policy test --config sts.yaml --subject-token @FILE --audience A [--now T] [--expect allow]
//	stsctl policy review --config sts.yaml [--metrics http://127.0.0.1:9090/metrics]
//	stsctl policy status --sts http://127.0.0.1:9090 [--json]   (the STS's metrics_listen)
package main
