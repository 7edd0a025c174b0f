package saga_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sysops-squad/sysops/saga"
	"github.com/sysops-squad/sysops/sqldb"
)

// A two-step saga whose second step is refused: the first is compensated.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "saga-example")
	defer os.RemoveAll(dir)
	db, err := sqldb.Open(ctx, "sqlite:"+filepath.Join(dir, "orchestrator.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	if _, err := sqldb.Migrate(ctx, db, saga.MigrationSet, saga.Migrations()); err != nil {
		fmt.Println(err)
		return
	}

	def := saga.Definition{Name: "create-ticket", Version: 1, Steps: []saga.Step{
		{
			Name: "open-ticket",
			Action: func(ctx context.Context, c saga.Call) (json.RawMessage, error) {
				fmt.Println("open ticket")
				return json.RawMessage(`{"ticket":"T-1"}`), nil
			},
			Compensate: func(ctx context.Context, c saga.Call) (json.RawMessage, error) {
				var out struct{ Ticket string }
				c.Output("open-ticket", &out)
				fmt.Println("cancel ticket", out.Ticket)
				return nil, nil
			},
		},
		{
			Name: "assign-expert",
			Action: func(ctx context.Context, c saga.Call) (json.RawMessage, error) {
				fmt.Println("assign expert")
				return nil, saga.Reject(errors.New("no expert free"))
			},
		},
	}}
	o, err := saga.New(db, saga.Config{}, def)
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := o.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer o.Stop()

	s, err := o.Run(ctx, "create-ticket", "", map[string]string{"customer": "C-1"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s.State, "-", s.Reason)
	// Output:
	// open ticket
	// assign expert
	// cancel ticket T-1
	// compensated - step assign-expert failed: no expert free
}
