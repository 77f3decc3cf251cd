package layering

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// go.mod stays tidy: every module the code imports is a direct requirement
// and nothing unused is listed (`go mod tidy -diff` prints nothing). The
// test reads go.mod, go.sum and every source file itself first, so that
// the test cache reruns it when any of them changes.
func TestGoModTidy(t *testing.T) {
	graph(t) // opens every .go file of the module
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	for _, f := range []string{"go.mod", "go.sum"} {
		if _, err := os.ReadFile(filepath.Join(root, f)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "mod", "tidy", "-diff")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go.mod is not tidy (run go mod tidy): %v\n%s", err, out)
	}
}
