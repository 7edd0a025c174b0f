package survey_test

import (
	"testing"

	"github.com/sysops-squad/sysops/internal/svctest"
	"github.com/sysops-squad/sysops/services/survey"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func TestSurveyAPI(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, survey.Spec())
		base := env.URL(survey.Name)
		send := map[string]string{"ticket_id": "t1", "customer_id": "c1", "expert_id": "e1"}
		r := svctest.Do(t, "POST", base+"/surveys", send)
		if r.Status != 201 {
			t.Fatalf("send: %d %s", r.Status, r.Body)
		}
		var first, again survey.Survey
		r.Decode(t, &first)
		// One survey per ticket: sending again returns the first.
		r = svctest.Do(t, "POST", base+"/surveys", send)
		r.Decode(t, &again)
		if r.Status != 200 || again.ID != first.ID {
			t.Errorf("second send: %d %+v, want 200 with survey %s", r.Status, again, first.ID)
		}
		svctest.WantError(t, "missing fields", svctest.Do(t, "POST", base+"/surveys", `{"ticket_id":"t2"}`), 400, `"customer_id"`, `"expert_id"`)

		r = svctest.Do(t, "POST", base+"/surveys/"+first.ID+"/response", map[string]any{"rating": 4, "comment": "ok"})
		var answered survey.Survey
		r.Decode(t, &answered)
		if r.Status != 200 || answered.Status != "answered" || answered.Rating == nil || *answered.Rating != 4 || answered.AnsweredAt == nil {
			t.Errorf("answer: %d %s", r.Status, r.Body)
		}
		svctest.WantError(t, "rating as text", svctest.Do(t, "POST", base+"/surveys/"+first.ID+"/response", `{"rating":"five"}`), 400, `"rating"`)
		svctest.WantError(t, "unknown survey", svctest.Do(t, "POST", base+"/surveys/nope/response", map[string]int{"rating": 3}), 404, "nope")

		var list struct{ Surveys []survey.Survey }
		svctest.Do(t, "GET", base+"/surveys?ticket_id=t1", nil).Decode(t, &list)
		if len(list.Surveys) != 1 || list.Surveys[0].Status != "answered" {
			t.Errorf("surveys of t1 = %+v", list.Surveys)
		}
		svctest.WantError(t, "no filter", svctest.Do(t, "GET", base+"/surveys", nil), 400, "customer_id")
	})
}
