package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestIvshmemServerArgErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"-l", "lots"}, 2},
		{[]string{"-m", "a/b"}, 2},
		{[]string{"-bogus"}, 2},
		{[]string{"extra"}, 2},
		{[]string{"-S", sock, "-m", "petrel-test-never-created", "-l", "3M"}, 1},
		{[]string{"-S", sock, "-m", "petrel-test-never-created", "-n", "0"}, 1},
		{[]string{"-S", sock, "-m", "petrel-test-never-created", "-n", "65"}, 1},
	} {
		if got := runIvshmemServer(c.args); got != c.code {
			t.Errorf("ivshmem-server %q: exit %d, want %d", c.args, got, c.code)
		}
	}
	if _, err := os.Stat("/dev/shm/petrel-test-never-created"); err == nil {
		os.Remove("/dev/shm/petrel-test-never-created")
		t.Error("a refused configuration created the shm object")
	}
}
