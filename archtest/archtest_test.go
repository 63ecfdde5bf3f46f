package archtest_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/importer"
	"go/token"
	"go/types"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/claimcheck/claimcheck"

// sdk are the packages another module builds against: worker.Main and
// worker.Type for job types, the client SDK, and tokens (which the client's
// users verify with). A new public package meant for other modules belongs
// here.
var sdk = []string{module + "/worker", module + "/worker/builtin", module + "/client", module + "/tokens"}

// listed is what `go list -json` says of one package.
type listed struct {
	ImportPath string
	Name       string
	Export     string
	Imports    []string
	Standard   bool
}

// goList runs `go list -json args...` in the module root.
func goList(t *testing.T, args ...string) []listed {
	t.Helper()
	statSources(t)
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, append([]string{"list", "-json"}, args...)...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, stderr.String())
	}
	var pkgs []listed
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// statSources looks at every Go file and go.mod of the module, so that
// `go test`'s cache, which knows only the files a test itself touches and
// not those its go list reads, runs these tests again after any change.
func statSources(t *testing.T) {
	t.Helper()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != ".." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum") {
			_, err = os.Stat(path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func isInternal(path string) bool {
	return strings.Contains(path, "/internal/") || strings.HasSuffix(path, "/internal")
}

// TestPublicAPIHasNoInternalTypes walks the exported API of each SDK
// package with go/types, from the compiler's export data, and fails on any
// exported name whose type, signature, field, method, embedded type or
// type parameter mentions a package under internal/ — which another module
// could not name, and often not use at all.
func TestPublicAPIHasNoInternalTypes(t *testing.T) {
	exports := map[string]string{}
	for _, p := range goList(t, append([]string{"-export", "-deps"}, sdk...)...) {
		exports[p.ImportPath] = p.Export
	}
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		f, ok := exports[path]
		if !ok || f == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(f)
	})
	for _, path := range sdk {
		pkg, err := imp.Import(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, leak := range internalMentions(pkg) {
			t.Errorf("%s", leak)
		}
	}
}

// internalMentions lists every exported name of pkg that mentions an
// internal package, as "pkg.Name[.member]: mentions path.Type".
func internalMentions(pkg *types.Package) []string {
	w := &walker{pkg: pkg, seen: map[types.Type]bool{}}
	scope := pkg.Scope()
	for _, name := range scope.Names() {
		obj := scope.Lookup(name)
		if !obj.Exported() {
			continue
		}
		where := pkg.Name() + "." + name
		switch o := obj.(type) {
		case *types.TypeName:
			w.typeDecl(where, o)
		default: // Func, Var, Const
			w.walk(where, o.Type())
		}
	}
	sort.Strings(w.found)
	return slices.Compact(w.found)
}

type walker struct {
	pkg   *types.Package
	seen  map[types.Type]bool
	found []string
}

// typeDecl checks a declared type: what it is made of, and its methods
// (on T and *T) that another package can call.
func (w *walker) typeDecl(where string, tn *types.TypeName) {
	if tn.IsAlias() {
		w.walk(where, tn.Type())
		return
	}
	named, ok := tn.Type().(*types.Named)
	if !ok {
		w.walk(where, tn.Type())
		return
	}
	w.seen[named] = true
	if tps := named.TypeParams(); tps != nil {
		for i := range tps.Len() {
			w.walk(where+"["+tps.At(i).Obj().Name()+"]", tps.At(i).Constraint())
		}
	}
	w.walk(where, named.Underlying())
	ms := types.NewMethodSet(types.NewPointer(named))
	for i := range ms.Len() {
		m := ms.At(i).Obj()
		if m.Exported() {
			w.walk(where+"."+m.Name(), m.Type())
		}
	}
}

// walk records an internal package anywhere in t's structure as far as
// another module can see it: exported fields, embedded fields (their
// promoted members are visible), parameters, results, elements. An
// unexported type of the package itself is followed, since its exported
// fields and methods are reachable through the name that returns it.
func (w *walker) walk(where string, t types.Type) {
	switch t := t.(type) {
	case *types.Alias:
		if p := t.Obj().Pkg(); p != nil && isInternal(p.Path()) {
			w.found = append(w.found, where+": mentions "+p.Path()+"."+t.Obj().Name())
			return
		}
		w.walk(where, types.Unalias(t))
	case *types.Named:
		obj := t.Obj()
		if p := obj.Pkg(); p != nil && isInternal(p.Path()) {
			w.found = append(w.found, where+": mentions "+p.Path()+"."+obj.Name())
			return
		}
		if args := t.TypeArgs(); args != nil {
			for i := range args.Len() {
				w.walk(where, args.At(i))
			}
		}
		if obj.Pkg() == w.pkg && !obj.Exported() && !w.seen[t] {
			w.seen[t] = true
			w.typeDecl(where+"("+obj.Name()+")", obj)
		}
	case *types.Pointer:
		w.walk(where, t.Elem())
	case *types.Slice:
		w.walk(where, t.Elem())
	case *types.Array:
		w.walk(where, t.Elem())
	case *types.Chan:
		w.walk(where, t.Elem())
	case *types.Map:
		w.walk(where, t.Key())
		w.walk(where, t.Elem())
	case *types.Signature:
		for _, tup := range []*types.Tuple{t.Params(), t.Results()} {
			for i := range tup.Len() {
				w.walk(where, tup.At(i).Type())
			}
		}
	case *types.Struct:
		for i := range t.NumFields() {
			if f := t.Field(i); f.Exported() || f.Embedded() {
				w.walk(where+"."+f.Name(), f.Type())
			}
		}
	case *types.Interface:
		for i := range t.NumEmbeddeds() {
			w.walk(where, t.EmbeddedType(i))
		}
		for i := range t.NumExplicitMethods() {
			if m := t.ExplicitMethod(i); m.Exported() {
				w.walk(where+"."+m.Name(), m.Type())
			}
		}
	case *types.Union:
		for i := range t.Len() {
			w.walk(where, t.Term(i).Type())
		}
	case *types.TypeParam:
		w.walk(where, t.Constraint())
	}
}

// TestImportLayering: every dependency points one way. Nothing under
// internal/ imports a claimcheck package outside it (internal/config, the
// configuration, is the bottom, so worker.Main and the wiring can share
// it), and app, the wiring at the top, is imported only by commands
// (package main) and its own subpackages, never by a package it wires.
// Test files are not counted: end-to-end tests may start the whole stack.
func TestImportLayering(t *testing.T) {
	pkgs := goList(t, "./...")
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages; is the test running in the module?", len(pkgs))
	}
	own := func(path string) bool { return path == module || strings.HasPrefix(path, module+"/") }
	app := module + "/app"
	for _, p := range pkgs {
		for _, imp := range p.Imports {
			if !own(imp) {
				continue
			}
			if isInternal(p.ImportPath) && !isInternal(imp) {
				t.Errorf("%s (internal) imports %s: internal packages sit below every public one", p.ImportPath, imp)
			}
			underApp := p.ImportPath == app || strings.HasPrefix(p.ImportPath, app+"/")
			if (imp == app || strings.HasPrefix(imp, app+"/")) && p.Name != "main" && !underApp {
				t.Errorf("%s imports %s: only commands stand above the wiring", p.ImportPath, imp)
			}
		}
	}
}
