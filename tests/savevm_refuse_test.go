//go:build amd64

package tests

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/tests/guest"
)

// TestLoadVMRefusals: a state saved by one machine is refused, with the
// difference named and the image untouched, by a machine configured
// otherwise (more RAM, another device in a slot), and an unknown tag is
// refused too; the machine it was saved from loads it.
func TestLoadVMRefusals(t *testing.T) {
	testutil.NeedKVM(t)
	elf := guest.Build(t, "saved_guest.c")
	disk := newQcow2(t, "16M")
	cfg := pc.Config{MemoryMiB: 64, Kernel: elf, Cmdline: "ticklen=262144", Disks: []pc.DiskConfig{{Path: disk}}}

	m, out := newMachine(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := m.Run(ctx); done <- err }()
	deadline := time.Now().Add(runTimeout)
	for !regexp.MustCompile(`TICK 2 `).MatchString(out.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no tick:\n%s", indent(out.String()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := m.SaveVM(pc.SnapshotRequest{Tag: "s1"}); err != nil {
		t.Fatalf("SaveVM: %v", err)
	}
	if err := m.SaveVM(pc.SnapshotRequest{Tag: "s1"}); err == nil || !strings.Contains(err.Error(), "Snapshot 's1' already exists") {
		t.Fatalf("a second save of s1 without overwrite: %v", err)
	}
	m.Shutdown()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	m.Close()
	image, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		cfg  func(pc.Config) pc.Config
		tag  string
		want string
	}{
		{"more RAM", func(c pc.Config) pc.Config { c.MemoryMiB = 128; return c }, "s1",
			"memory: saved 64 MiB, this machine 128 MiB"},
		{"another device", func(c pc.Config) pc.Config {
			c.Disks = append(c.Disks, pc.DiskConfig{Path: newQcow2(t, "1M"), ReadOnly: true})
			return c
		}, "s1", "this machine has device"},
		{"unknown tag", func(c pc.Config) pc.Config { return c }, "nope", "Snapshot 'nope' does not exist"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m2, _ := newMachine(t, c.cfg(cfg))
			err := m2.LoadVM(pc.SnapshotRequest{Tag: c.tag})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("LoadVM: %v, want an error with %q", err, c.want)
			}
			t.Logf("refused: %v", err)
			m2.Close()
			if now, _ := os.ReadFile(disk); !bytes.Equal(now, image) {
				t.Fatal("the refused load changed the image")
			}
		})
	}
	m3, out3 := newMachine(t, cfg)
	if err := m3.LoadVM(pc.SnapshotRequest{Tag: "s1"}); err != nil {
		t.Fatalf("the same machine cannot load s1: %v", err)
	}
	go func() { _, err := m3.Run(ctx); done <- err }()
	deadline = time.Now().Add(runTimeout)
	for !tickRE.MatchString(out3.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("the loaded guest does not tick:\n%s", indent(out3.String()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(out3.String(), "READY") {
		t.Fatal("the loaded guest booted again")
	}
	m3.Shutdown()
	<-done
}
