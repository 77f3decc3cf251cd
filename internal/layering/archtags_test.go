package layering

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// A package that is x86 only (machine/pc and what is built on it) has
// every file constrained to amd64, by a `//go:build amd64` line or an
// _amd64.go name: one file without it compiles alone on ppc64, where the
// rest of its package is missing, and breaks GOARCH=ppc64 go build ./...
// (scripts/test-cross.sh). This catches that in the ordinary test run.
func TestX86OnlyPackagesAreWhole(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	for _, pkg := range x86Only {
		files, err := filepath.Glob(filepath.Join(root, pkg, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no Go files (%v)", pkg, err)
		}
		for _, f := range files {
			if !amd64Only(t, f) {
				t.Errorf("%s is x86 only but %s lacks //go:build amd64", pkg, filepath.Base(f))
			}
		}
	}
}

// x86Only are the packages that build for amd64 only (docs/ARCHITECTURE.md:
// the PC, the QMP adapter over it, the whole-VM tests).
var x86Only = []string{"machine/pc", "machine/pcqmp", "tests"}

// amd64Only reports whether f builds only for amd64: an _amd64.go or
// _amd64_test.go name, or a //go:build amd64 line.
func amd64Only(t *testing.T, f string) bool {
	base := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(f), ".go"), "_test")
	return strings.HasSuffix(base, "_amd64") || hasAMD64Tag(t, f)
}

func hasAMD64Tag(t *testing.T, f string) bool {
	fh, err := os.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	s := bufio.NewScanner(fh)
	for s.Scan() {
		l := strings.TrimSpace(s.Text())
		if strings.HasPrefix(l, "package ") {
			return false
		}
		if l == "//go:build amd64" {
			return true
		}
	}
	return false
}
