package sqldb_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing/fstest"

	"github.com/sysops-squad/sysops/sqldb"
)

// A service provisions its own database, migrates it at start and writes
// in transactions. The same code runs on PostgreSQL with a postgres:// base.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "sqldb-example")
	defer os.RemoveAll(dir)

	url, err := sqldb.Provision(ctx, dir, "ticket")
	if err != nil {
		panic(err)
	}
	fmt.Println("database:", filepath.Base(url))

	db, err := sqldb.Open(ctx, url)
	if err != nil {
		panic(err)
	}
	defer db.Close()

	migrations := fstest.MapFS{
		"00001_ticket.sql": {Data: []byte(`-- +goose Up
CREATE TABLE ticket (id TEXT PRIMARY KEY, status TEXT NOT NULL);
-- +goose Down
DROP TABLE ticket;`)},
	}
	res, err := sqldb.Migrate(ctx, db, "ticket", migrations)
	if err != nil {
		panic(err)
	}
	fmt.Println("applied:", res.Applied)

	err = sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO ticket (id, status) VALUES ($1, $2)`, "T-1", "open")
		return err
	})
	if err != nil {
		panic(err)
	}
	var status string
	_ = db.QueryRowContext(ctx, `SELECT status FROM ticket WHERE id = $1`, "T-1").Scan(&status)
	fmt.Println("T-1 is", status)
	// Output:
	// database: ticket.db
	// applied: [00001_ticket.sql]
	// T-1 is open
}
