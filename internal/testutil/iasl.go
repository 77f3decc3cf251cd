package testutil

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Disassemble runs `iasl -d` (acpica-tools) on the ACPI table data, saved
// as name.dat in a new temporary directory, and returns that directory and
// the .dsl text. Any iasl error or warning fails the test; a missing iasl
// skips it (fails under CI, see NeedTool).
func Disassemble(t testing.TB, name string, data []byte) (dir, dsl string) {
	t.Helper()
	iasl := NeedTool(t, "iasl")
	dir = t.TempDir()
	p := filepath.Join(dir, name+".dat")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(iasl, "-d", p).CombinedOutput()
	if err != nil || bytes.Contains(bytes.ToLower(out), []byte("error")) || bytes.Contains(bytes.ToLower(out), []byte("warning")) {
		t.Fatalf("iasl -d %s: %v\n%s", name, err, out)
	}
	text, err := os.ReadFile(filepath.Join(dir, name+".dsl"))
	if err != nil {
		t.Fatal(err)
	}
	return dir, string(text)
}
