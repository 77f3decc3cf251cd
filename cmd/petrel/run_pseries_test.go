package main

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestParsePseriesArgs(t *testing.T) {
	dir := t.TempDir()
	k := filepath.Join(dir, "vmlinux")
	os.WriteFile(k, []byte("kernel"), 0o644)
	cfg, err := parsePseriesArgs([]string{"-kernel", k, "-m", "512M", "-smp", "2", "-kvm-type", "PR", "-append", "quiet", "-console", "none"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RAMSize != 512<<20 || cfg.CPUs != 2 || cfg.KVMType != 2 || cfg.Cmdline != "quiet" || string(cfg.Kernel) != "kernel" || cfg.Console != nil {
		t.Fatalf("config %+v", cfg)
	}
	for _, bad := range [][]string{
		{},
		{"-kernel", filepath.Join(dir, "missing")},
		{"-kernel", k, "-kvm-type", "xen"},
		{"-kernel", k, "-console", "tcp"},
		{"-kernel", k, "-m", "lots"},
		{"-kernel", k, "extra"},
	} {
		if _, err := parsePseriesArgs(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// On a non-POWER host run-pseries must say why it cannot run, not crash.
func TestRunPseriesNeedsPOWER(t *testing.T) {
	if strings.HasPrefix(runtime.GOARCH, "ppc64") {
		t.Skip("SKIPPING: this checks the refusal on non-POWER hosts")
	}
	dir := t.TempDir()
	k := filepath.Join(dir, "vmlinux")
	os.WriteFile(k, []byte("kernel"), 0o644)
	if code := runPseriesMain([]string{"-kernel", k, "-m", "128M", "-console", "none"}); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
}
