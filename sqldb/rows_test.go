package sqldb_test

import (
	"fmt"
	"testing"

	"github.com/sysops-squad/sysops/sqldb"
)

func TestRows(t *testing.T) {
	ids := []string{"a", "b"}
	text, args := sqldb.Rows(1, "(?, CAST(? AS BIGINT))", len(ids), func(i int) []any { return []any{ids[i], i} })
	if want := "($2, CAST($3 AS BIGINT)), ($4, CAST($5 AS BIGINT))"; text != want {
		t.Errorf("text = %q, want %q", text, want)
	}
	if got := fmt.Sprint(args); got != "[a 0 b 1]" {
		t.Errorf("args = %s", got)
	}
	if text, args := sqldb.Rows(0, "?", 3, func(i int) []any { return []any{i} }); text != "$1, $2, $3" || len(args) != 3 {
		t.Errorf("list = %q %v", text, args)
	}
	if text, args := sqldb.Rows(0, "(?)", 0, nil); text != "" || len(args) != 0 {
		t.Errorf("no rows = %q %v", text, args)
	}
}
