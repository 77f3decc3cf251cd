package block

import (
	"os"
	"path/filepath"
	"testing"
)

// A file that two engines both claim is always given to the one whose name
// sorts first, whatever the registration order (the registry is a map, and
// ranging over it would pick either at random).
func TestProbeOrderIsFixed(t *testing.T) {
	const magic = "PETREL-PROBE-ORDER-TEST"
	claims := func(head []byte) bool { return len(head) >= len(magic) && string(head[:len(magic)]) == magic }
	Register(Format{Name: "probetest-b", Probe: claims})
	Register(Format{Name: "probetest-a", Probe: claims})
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, []byte(magic), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		name, err := Probe(path)
		if err != nil {
			t.Fatal(err)
		}
		if name != "probetest-a" {
			t.Fatalf("probe %d chose %q, want probetest-a", i, name)
		}
	}
	other := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(other, []byte("not claimed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if name, err := Probe(other); err != nil || name != "raw" {
		t.Fatalf("unclaimed file probed as %q (%v), want raw", name, err)
	}
}
