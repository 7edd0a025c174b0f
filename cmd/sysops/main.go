// Command sysops runs the Sysops Squad system and its toolkit's tools.
//
//	sysops up                 every service on one machine, embedded NATS, SQLite files
//	sysops serve <service>    one service as its own process
//	sysops version            the build's version
//
// Configuration comes from flags, each with an environment equivalent:
// --data-dir (SYSOPS_DATA_DIR), --postgres (SYSOPS_POSTGRES), --nats
// (SYSOPS_NATS), --addr (SYSOPS_ADDR), --db-prefix (SYSOPS_DB_PREFIX) and
// --log-level (SYSOPS_LOG_LEVEL). Only this package reads flags and the
// environment; everything else is configured through structs.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
)

func main() {
	if err := newRootCmd().ExecuteContext(context.Background()); err != nil {
		// One line, no usage dump, no stack trace.
		fmt.Fprintln(os.Stderr, "sysops: "+strings.ReplaceAll(err.Error(), "\n", "; "))
		os.Exit(1)
	}
}
