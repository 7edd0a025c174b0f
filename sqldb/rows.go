package sqldb

import (
	"strconv"
	"strings"
)

// Rows writes the rows of a multi-row statement — a VALUES list, an IN
// list — and collects their arguments: shape once per row, comma
// separated, its ? marks numbered in turn after the n arguments that come
// before the rows ($n+1, $n+2...), and row(i)'s values, which must be as
// many as shape's marks, appended in order. For example Rows(1, "(?,
// CAST(? AS BIGINT))", 2, ...) is "($2, CAST($3 AS BIGINT)), ($4,
// CAST($5 AS BIGINT))".
func Rows(n int, shape string, count int, row func(i int) []any) (string, []any) {
	var b strings.Builder
	args := make([]any, 0, count*strings.Count(shape, "?"))
	for i := range count {
		if i > 0 {
			b.WriteString(", ")
		}
		mark := n + len(args)
		for _, part := range strings.SplitAfter(shape, "?") {
			if head, ok := strings.CutSuffix(part, "?"); ok {
				mark++
				b.WriteString(head + "$" + strconv.Itoa(mark))
				continue
			}
			b.WriteString(part)
		}
		args = append(args, row(i)...)
	}
	return b.String(), args
}
