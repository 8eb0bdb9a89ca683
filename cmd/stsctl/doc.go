// Command stsctl is the safeconduct client and admin CLI.
//
//	stsctl exchange --sts URL --subject-token @FILE --audience A [--scope S] ...
//	stsctl verify --issuer URL --audience A --token @FILE
package main
