package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysops-squad/sysops/internal/testenv"
)

// readmeWalkthrough returns the shell block between the walkthrough
// markers of the README, its API line pointed at api.
func readmeWalkthrough(t *testing.T, api string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- walkthrough:start -->")
	block, _, ok2 := strings.Cut(rest, "<!-- walkthrough:end -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no walkthrough markers")
	}
	block = strings.TrimSpace(block)
	block = strings.TrimPrefix(block, "```sh")
	block = strings.TrimSuffix(block, "```")
	const apiLine = "API=http://127.0.0.1:8080/api"
	if !strings.Contains(block, apiLine) {
		t.Fatalf("the walkthrough does not start with %s", apiLine)
	}
	return strings.Replace(block, apiLine, "API="+api+"/api", 1)
}

// TestReadmeWalkthrough runs the README's walkthrough against a real
// `sysops up`, twice (the second run must be answered from the first's
// idempotency keys), then seeds the demo data twice.
func TestReadmeWalkthrough(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Unavailable(t, "the README walkthrough needs %s: %v", tool, err)
		}
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	p := start(t, "up", "--data-dir", dataDir, "--addr", "127.0.0.1:0")
	services := p.table(t)
	script := readmeWalkthrough(t, services["gateway"])
	var outputs []string
	for run := 1; run <= 2; run++ {
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("walkthrough run %d failed: %v\n%s\nsysops stderr:\n%s", run, err, out, p.stderr)
		}
		outputs = append(outputs, string(out))
	}
	t.Logf("walkthrough output:\n%s", outputs[0])
	for _, want := range []string{`"status": "assigned"`, `"open_tickets": 1`, `"priority`, `"status": "answered"`, `"city":"San Francisco"`, `"contract":"cancelled"`, `has no active support plan`} {
		if !strings.Contains(outputs[0], want) {
			t.Errorf("walkthrough output lacks %s:\n%s", want, outputs[0])
		}
	}

	seed := func() string {
		out, err := exec.Command(binary, "seed", "--data-dir", dataDir).CombinedOutput()
		if err != nil {
			t.Fatalf("seed: %v\n%s", err, out)
		}
		return string(out)
	}
	first, second := seed(), seed()
	if !strings.Contains(first, "20 customers") || !strings.Contains(first, "12 experts") || !strings.Contains(first, "40 tickets") {
		t.Errorf("seed printed %q", first)
	}
	for _, state := range []string{"assigned", "completed", "cancelled"} {
		if strings.Contains(first, " 0 "+state) {
			t.Errorf("seed left no ticket %s: %s", state, first)
		}
	}
	if first != second {
		t.Errorf("seeding twice differed:\n%s\n%s", first, second)
	}
	code, body := getJSON(t, services["gateway"]+"/api/reports/summary")
	tickets, _ := body["tickets"].(map[string]any)
	// The walkthrough's ticket and the seed's 40, once each (those refused
	// by a saga are cancelled tickets too).
	if code != 200 || tickets["total"] != 41.0 {
		t.Errorf("summary after seeding twice = %d %v", code, body)
	}
	if err := p.stop(t, os.Interrupt); err != nil {
		t.Fatalf("up exited with %v; stderr:\n%s", err, p.stderr)
	}
}
