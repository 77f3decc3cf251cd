package guest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

// PrebuiltEnv names the directory of guests built ahead of time by
// Prebuild, for test binaries run where there is no gcc or binutils (the
// nested KVM guest of scripts/test-kvm.sh). Entries are keyed by their
// sources, so a stale directory fails loudly instead of running old code.
const PrebuiltEnv = "PETREL_GUEST_DIR"

// prebuilt finds the program srcs in dir by its source key (the compiler's
// version is not part of it: the machine running the tests has no
// compiler to ask). Prebuild writes single-source programs only, so a
// multi-source Build has no prebuilt counterpart and fails here.
func prebuilt(dir string, srcs []string) (string, error) {
	name, key, _, err := sourceKey(nil, srcs)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name+"-"+key+".elf")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("guest %s is not prebuilt in %s=%s (go run ./tests/guest/prebuild fills it): %w", name, PrebuiltEnv, dir, err)
	}
	return p, nil
}

// flatGuest is an assembly test guest linked as a flat binary loaded at
// 1 MiB (machine/pc's and vmm's tests), assembled with its directory on
// the include path.
type flatGuest struct {
	src string // relative to the module root
	// asFlags select the mode (--32 for the protected-mode guests that
	// machine/pc enters at 1 MiB, --64 for vmm's benchmark guest) and any
	// --defsym the source expects.
	asFlags   []string
	emulation string // ld -m
}

// flatGuests are the flat guests by name; Flat and Prebuild know no
// others, so a new testdata/*.S guest must be added here.
var flatGuests = map[string]flatGuest{
	"irq-guest":   {"machine/pc/testdata/irq-guest.S", []string{"--32"}, "elf_i386"},
	"msi-guest":   {"machine/pc/testdata/msi-guest.S", []string{"--32"}, "elf_i386"},
	"pit-guest":   {"machine/pc/testdata/pit-guest.S", []string{"--32"}, "elf_i386"},
	"bench-guest": {"vmm/testdata/bench-guest.S", []string{"--64", "--defsym", "ITER=50"}, "elf_x86_64"},
}

// flatKey hashes a flat guest's recipe, its source and every .inc file
// beside it (what .include can reach).
func flatKey(g flatGuest) (string, error) {
	h := sha256.New()
	fmt.Fprintln(h, g.asFlags, g.emulation)
	src := filepath.Join(Dir(), "..", "..", g.src)
	incs, _ := filepath.Glob(filepath.Join(filepath.Dir(src), "*.inc"))
	for _, f := range append([]string{src}, incs...) {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("flat guest: %w", err)
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:24], nil
}

// Flat returns the bytes of the flat assembly guest called name (the
// source's base name without .S), assembled with binutils, or taken from
// PETREL_GUEST_DIR when that is set. Flat guests have no build cache: each
// call assembles again, into the test's temporary directory.
func Flat(t testing.TB, name string) []byte {
	t.Helper()
	g, ok := flatGuests[name]
	if !ok {
		t.Fatalf("flat guest %q unknown (tests/guest/prebuilt.go lists them)", name)
	}
	var p string
	if dir := os.Getenv(PrebuiltEnv); dir != "" {
		key, err := flatKey(g)
		if err != nil {
			t.Fatal(err)
		}
		p = filepath.Join(dir, name+"-"+key+".bin")
	} else {
		p = filepath.Join(t.TempDir(), name+".bin")
		if err := assemble(testutil.NeedTool(t, "as"), testutil.NeedTool(t, "ld"), g, p); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("flat guest %s: %v", name, err)
	}
	return b
}

// assemble builds g into out: as, then ld with the text at 0x100000 and
// --oformat binary, so the file is the raw bytes the tests copy to GPA
// 1 MiB and enter at its first byte.
func assemble(as, ld string, g flatGuest, out string) error {
	src := filepath.Join(Dir(), "..", "..", g.src)
	obj := out + ".o"
	defer os.Remove(obj)
	args := append(append([]string{}, g.asFlags...), "-I", filepath.Dir(src), "-o", obj, src)
	if b, err := exec.Command(as, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("as %s: %w\n%s", g.src, err, b)
	}
	if b, err := exec.Command(ld, "-m", g.emulation, "-Ttext=0x100000", "-e", "0x100000", "--oformat", "binary",
		"-o", out, obj).CombinedOutput(); err != nil {
		return fmt.Errorf("ld %s: %w\n%s", g.src, err, b)
	}
	return nil
}

// Prebuild builds every guest program (progs/*.c, ivshmem/*.c) and every
// flat guest into dir under the names Build and Flat look up with
// PETREL_GUEST_DIR, and returns how many it wrote. It needs gcc and
// binutils, found on $PATH, and stops at the first failure (n counts what
// was written before it).
func Prebuild(dir string) (int, error) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return 0, fmt.Errorf("prebuild: %w", err)
	}
	as, err := exec.LookPath("as")
	if err != nil {
		return 0, fmt.Errorf("prebuild: %w", err)
	}
	ld, err := exec.LookPath("ld")
	if err != nil {
		return 0, fmt.Errorf("prebuild: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("prebuild: %w", err)
	}
	var progs []string
	for _, sub := range []string{"progs", "ivshmem"} {
		m, _ := filepath.Glob(filepath.Join(Dir(), sub, "*.c"))
		progs = append(progs, m...)
	}
	n := 0
	for _, src := range progs {
		built, err := build(gcc, []string{src})
		if err != nil {
			return n, err
		}
		name, key, _, err := sourceKey(nil, []string{src})
		if err != nil {
			return n, err
		}
		b, err := os.ReadFile(built)
		if err != nil {
			return n, fmt.Errorf("prebuild: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+"-"+key+".elf"), b, 0o644); err != nil {
			return n, fmt.Errorf("prebuild: %w", err)
		}
		n++
	}
	names := make([]string, 0, len(flatGuests))
	for name := range flatGuests {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		g := flatGuests[name]
		key, err := flatKey(g)
		if err != nil {
			return n, err
		}
		if err := assemble(as, ld, g, filepath.Join(dir, name+"-"+key+".bin")); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
