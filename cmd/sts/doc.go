// Command sts is the safeconduct Security Token Service.
//
//	sts serve --config sts.yaml          run the STS
//	sts check-config --config sts.yaml   validate the configuration and exit
//	sts quickstart [--dir DIR]           write a demo setup, run it, show an exchange
//	sts version
package main
