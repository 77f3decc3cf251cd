package guest

import (
	"debug/elf"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/firmware/bzimage"
)

// TestBuildMakesPVHELF checks the kit's output: an ELF64 loaded at 1 MiB
// whose PVH note names the 32-bit entry, and a cached second build.
func TestBuildMakesPVHELF(t *testing.T) {
	p := Build(t, "poweroff.c")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	entry, ok := bzimage.FindPVHEntry(data)
	if !ok {
		t.Fatal("no XEN_ELFNOTE_PHYS32_ENTRY note")
	}
	f, err := elf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if uint64(entry) != f.Entry || entry != 0x100000 {
		t.Fatalf("PVH entry %#x, ELF entry %#x, want 0x100000", entry, f.Entry)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_LOAD && prog.Paddr < 0x100000 {
			t.Fatalf("segment at %#x below 1 MiB", prog.Paddr)
		}
	}
	if p2 := Build(t, "poweroff.c"); p2 != p {
		t.Fatalf("second build at %s, want the cached %s", p2, p)
	}
}

func TestBuildReportsCompileErrors(t *testing.T) {
	gcc := "gcc"
	if _, err := build(gcc, []string{writeTemp(t, "bad.c", "int main(void) { return undefined_thing; }")}); err == nil {
		t.Fatal("a program that does not compile was built")
	}
}

func writeTemp(t *testing.T, name, src string) string {
	f := t.TempDir() + "/" + name
	if err := os.WriteFile(f, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestEveryProgramBuilds compiles each guest program, so that one only a
// KVM host runs still fails here when it does not build.
func TestEveryProgramBuilds(t *testing.T) {
	progs, err := filepath.Glob(filepath.Join(Dir(), "progs", "*.c"))
	if err != nil || len(progs) == 0 {
		t.Fatalf("no programs: %v", err)
	}
	more, _ := filepath.Glob(filepath.Join(Dir(), "ivshmem", "*.c"))
	for _, p := range append(progs, more...) {
		Build(t, p)
	}
}
