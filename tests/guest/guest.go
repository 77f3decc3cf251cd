// Package guest builds the freestanding guest programs of Petrel's
// whole-VM tests: PVH ELF images that switch to long mode and run a C
// main() at CPL3 (see README.md and lib/guest.h).
package guest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

// Flags are the gcc flags every guest program is built with: freestanding,
// no SSE (-mgeneral-regs-only, so the kernel-mode code never needs
// FXSAVE/XSAVE state), no red zone (interrupts arrive on the user stack
// frame's edge otherwise), no CET endbr64 and no stack protector
// (there is no TLS), static, linked by lib/link.ld at 1 MiB.
var Flags = []string{
	"-m64", "-O2", "-g0", "-Wall", "-Werror",
	"-ffreestanding", "-fno-builtin", "-nostdlib", "-nostdinc",
	"-fno-pic", "-no-pie", "-static",
	"-mno-red-zone", "-mgeneral-regs-only",
	"-fno-stack-protector", "-fcf-protection=none",
	"-fno-asynchronous-unwind-tables",
	"-Wl,--build-id=none", "-Wl,-n", "-Wl,--no-warn-rwx-segments",
}

// libSources are the kit's files compiled into every program: start.S (the
// PVH entry, identity page tables, GDT/TSS/IDT, the switch to long mode and
// the drop to CPL3), guest.c (the C runtime: string functions, printf on
// the console, poweroff by ACPI S5, exception reports, command-line
// arguments, PCI config access) and virtio.c (the modern virtio-pci
// transport and split virtqueues).
var libSources = []string{"start.S", "guest.c", "virtio.c"}

// Dir is the directory of this package's source (lib/ and progs/ are under it).
// It comes from the compiled-in source path (runtime.Caller), so it holds
// wherever the test binary runs from, as long as the source tree is there.
func Dir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("guest: cannot locate the package source")
	}
	return filepath.Dir(file)
}

// LibDir holds guest.h, virtio.h, the runtime and the linker script.
func LibDir() string { return filepath.Join(Dir(), "lib") }

// Build compiles the guest program made of srcs (C or assembly files;
// a name without a directory is looked up in progs/) with the kit and
// returns the ELF's path. Builds are cached by the SHA-256 of the
// compiler version, flags and every input under os.UserCacheDir()/petrel/guest.
//
// With PETREL_GUEST_DIR set (a machine without gcc, such as the nested
// KVM guest of scripts/test-kvm.sh), the program is taken from that
// directory, where Prebuild put it, by the same key minus the compiler.
func Build(t testing.TB, srcs ...string) string {
	t.Helper()
	if dir := os.Getenv(PrebuiltEnv); dir != "" {
		p, err := prebuilt(dir, srcs)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p, err := build(testutil.NeedTool(t, "gcc"), srcs)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// resolve turns a bare file name into its path under progs/; a name with a
// directory (relative to the working directory, or absolute) is used as
// given, which is how ivshmem/*.c and tests' own sources are named.
func resolve(src string) string {
	if filepath.IsAbs(src) || strings.ContainsRune(src, filepath.Separator) {
		return src
	}
	return filepath.Join(Dir(), "progs", src)
}

// sourceKey hashes the flags and every input of a program (the kit's
// library and srcs resolved), prefixed by extra (the compiler's version).
func sourceKey(extra []byte, srcs []string) (name, key string, progs []string, err error) {
	if len(srcs) == 0 {
		return "", "", nil, fmt.Errorf("guest build: no sources")
	}
	h := sha256.New()
	h.Write(extra)
	fmt.Fprintln(h, Flags)
	var inputs []string
	libFiles := append(append([]string{}, libSources...), "link.ld", "guest.h", "virtio.h")
	for _, f := range libFiles {
		inputs = append(inputs, filepath.Join(LibDir(), f))
	}
	for _, s := range srcs {
		progs = append(progs, resolve(s))
	}
	inputs = append(inputs, progs...)
	for _, f := range inputs {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", "", nil, fmt.Errorf("guest build: %w", err)
		}
		// Name and length before the bytes, so that moving text from
		// one file to the next cannot produce the same hash.
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
		h.Write(b)
	}
	name = strings.TrimSuffix(filepath.Base(progs[0]), filepath.Ext(progs[0]))
	return name, hex.EncodeToString(h.Sum(nil))[:24], progs, nil
}

// build compiles srcs with gcc into the cache unless a build with the same
// key is there. The ELF is written under a temporary name and renamed into
// place, so test binaries building the same guest in parallel (go test runs
// packages concurrently) never see a half-written file; the loser of the
// race simply renames an identical file over the winner's.
func build(gcc string, srcs []string) (string, error) {
	ver, err := exec.Command(gcc, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("guest build: %s --version: %w", gcc, err)
	}
	name, key, progs, err := sourceKey(ver, srcs)
	if err != nil {
		return "", err
	}
	dir, err := cacheDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, name+"-"+key+".elf")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	tmp, err := os.CreateTemp(dir, ".build-*.elf")
	if err != nil {
		return "", fmt.Errorf("guest build: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	args := append([]string{}, Flags...)
	args = append(args, "-isystem", gccInclude(gcc), "-I", LibDir(), "-T", filepath.Join(LibDir(), "link.ld"), "-o", tmp.Name())
	for _, f := range libSources {
		args = append(args, filepath.Join(LibDir(), f))
	}
	args = append(args, progs...)
	cmd := exec.Command(gcc, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("guest build of %s: %w\n%s", name, err, stderr.String())
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", fmt.Errorf("guest build: %w", err)
	}
	return out, nil
}

// gccInclude is gcc's own header directory (stdarg.h) for -nostdinc builds.
func gccInclude(gcc string) string {
	b, err := exec.Command(gcc, "-print-file-name=include").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// cacheDir is os.UserCacheDir()/petrel/guest, or the same under the
// temporary directory when there is no user cache directory (a CI job
// without $HOME). Entries are never evicted: each is a few KiB.
func cacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	d := filepath.Join(base, "petrel", "guest")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("guest build cache: %w", err)
	}
	return d, nil
}
