package layering

import (
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Every testdata directory has a README.md saying how its files were made
// (by hand, by a tool and which version, by a fuzzer), so that a fixture
// can be checked and remade.
func TestTestdataHasREADME(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	var missing []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || path == root {
			return err
		}
		// Build output (out/, bin/ at the top) is no fixture.
		if rel, _ := filepath.Rel(root, path); strings.HasPrefix(d.Name(), ".") || rel == "out" || rel == "bin" {
			return filepath.SkipDir
		}
		if d.Name() != "testdata" {
			return nil
		}
		if _, err := os.Stat(filepath.Join(path, "README.md")); err != nil {
			rel, _ := filepath.Rel(root, path)
			missing = append(missing, rel)
		}
		return filepath.SkipDir // fixtures inside are described by this README
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Errorf("testdata directories without a README.md: %s", strings.Join(missing, ", "))
	}
}
