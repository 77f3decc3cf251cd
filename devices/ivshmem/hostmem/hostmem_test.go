package hostmem

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAnonymousRegionIsSharedAndUnnamed(t *testing.T) {
	before, _ := os.ReadDir(ShmDir)
	r, err := NewAnonymousRegion("m", 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	after, _ := os.ReadDir(ShmDir)
	if len(after) != len(before) {
		t.Fatalf("anonymous object left a name in %s", ShmDir)
	}
	// A second mapping of the same fd sees the first one's writes.
	m2, err := Map(r.FD(), r.Size())
	if err != nil {
		t.Fatal(err)
	}
	defer Unmap(m2)
	copy(r.Mem[100:], "shared")
	if string(m2[100:106]) != "shared" {
		t.Fatal("second mapping does not see the write")
	}
	if _, err := NewAnonymousRegion("m", 3<<10); !errors.Is(err, ErrSize) {
		t.Fatalf("bad size: %v", err)
	}
}

func TestOpenRefusesOddFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir, 1<<16); err == nil {
		t.Fatal("opened a directory as shared memory")
	}
	p := filepath.Join(dir, "f")
	os.WriteFile(p, make([]byte, 8192), 0o600)
	if _, err := Open(p, 1<<16); !errors.Is(err, ErrSize) || !strings.Contains(err.Error(), "exists with 8192 bytes") {
		t.Fatalf("size mismatch: %v", err)
	}
	if _, err := SizeOf(-1); err == nil {
		t.Fatal("SizeOf(-1) succeeded")
	}
}
