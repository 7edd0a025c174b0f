package sysops_test

// Rules about the project itself, enforced by tests: every direct
// dependency is explained in DEPENDENCIES.md, services never import each
// other, the toolkit never imports services, and every package says what
// it is in a doc comment.

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

const modulePath = "github.com/sysops-squad/sysops"

func TestDependenciesAreListed(t *testing.T) {
	out, err := exec.Command("go", "mod", "edit", "-json").Output()
	if err != nil {
		t.Fatalf("go mod edit -json: %v", err)
	}
	var mod struct {
		Require []struct {
			Path     string
			Indirect bool
		}
	}
	if err := json.Unmarshal(out, &mod); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("DEPENDENCIES.md")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(string(doc), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) >= 3 {
			listed[strings.Trim(strings.TrimSpace(cells[1]), "`")] = true
		}
	}
	direct := 0
	for _, r := range mod.Require {
		if r.Indirect {
			continue
		}
		direct++
		if !listed[r.Path] {
			t.Errorf("go.mod requires %s directly, but DEPENDENCIES.md does not say why", r.Path)
		}
	}
	if direct == 0 {
		t.Fatal("found no direct dependencies in go.mod; the check is broken")
	}
}

// goPackage is one directory of Go files.
type goPackage struct {
	dir     string // relative to the module root
	imports map[string]bool
	hasDoc  bool
	files   int
}

func loadPackages(t *testing.T) map[string]*goPackage {
	t.Helper()
	pkgs := map[string]*goPackage{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "sysops-data") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.ImportsOnly)
		if err != nil {
			return err
		}
		dir := filepath.ToSlash(filepath.Dir(path))
		p := pkgs[dir]
		if p == nil {
			p = &goPackage{dir: dir, imports: map[string]bool{}}
			pkgs[dir] = p
		}
		if strings.HasSuffix(path, "_test.go") {
			return nil // tests may import what they exercise
		}
		p.files++
		if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
			p.hasDoc = true
		}
		for _, imp := range f.Imports {
			p.imports[strings.Trim(imp.Path.Value, `"`)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// serviceOf returns the service a package belongs to ("location" for
// services/location/...), or "".
func serviceOf(dirOrImport string) string {
	rest, ok := strings.CutPrefix(dirOrImport, modulePath+"/")
	if !ok {
		rest = dirOrImport
	}
	parts := strings.Split(rest, "/")
	if len(parts) >= 2 && parts[0] == "services" {
		return parts[1]
	}
	return ""
}

func TestServicesDoNotImportEachOther(t *testing.T) {
	pkgs := loadPackages(t)
	checked := 0
	for _, p := range pkgs {
		self := serviceOf(p.dir)
		if self == "" {
			continue
		}
		checked++
		for imp := range p.imports {
			if other := serviceOf(imp); other != "" && strings.HasPrefix(imp, modulePath+"/services/") && other != self {
				t.Errorf("%s imports %s: a service reaches another only over HTTP or NATS", p.dir, imp)
			}
		}
	}
	if checked == 0 {
		t.Fatal("found no service packages; the check is broken")
	}
}

func TestToolkitDoesNotImportServices(t *testing.T) {
	for _, p := range loadPackages(t) {
		// cmd wires the services; the lab runs the system to measure it.
		if serviceOf(p.dir) != "" || strings.HasPrefix(p.dir, "cmd/") || strings.HasPrefix(p.dir, "lab/") || p.dir == "internal/host" {
			continue
		}
		for imp := range p.imports {
			if strings.HasPrefix(imp, modulePath+"/services/") {
				t.Errorf("%s imports %s: toolkit packages never depend on the Sysops services", p.dir, imp)
			}
		}
	}
}

func TestEveryPackageHasADocComment(t *testing.T) {
	var missing []string
	n := 0
	for _, p := range loadPackages(t) {
		if p.files == 0 {
			continue // test-only directory
		}
		n++
		if !p.hasDoc {
			missing = append(missing, p.dir)
		}
	}
	sort.Strings(missing)
	for _, dir := range missing {
		t.Errorf("package %s has no doc comment (// Package ... in doc.go)", dir)
	}
	if n < 5 {
		t.Fatalf("found only %d packages; the check is broken", n)
	}
}
