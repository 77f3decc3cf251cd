//go:build amd64

package tests

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/qmp"
	"github.com/petrel-vmm/petrel/tests/guest"
)

// TestHotplugSurvivesReboot hot-plugs a qcow2 disk and an ivshmem-plain
// device over QMP (go-qemu's client), lets the guest program
// (progs/reboot.c) use both and reset the machine through port 0xcf9, and
// checks that the rebooted guest finds both at power-on in the same slots
// and working: the disk holds what boot 1 wrote and BAR2 is the host's
// memory. QEMU keeps hot-plugged devices across a reset; so must Petrel.
func TestHotplugSurvivesReboot(t *testing.T) {
	testutil.NeedKVM(t)
	qemuImg := testutil.NeedTool(t, "qemu-img")
	elf := guest.Build(t, "reboot.c")
	dir := t.TempDir()
	disk := newQcow2(t, "16M")
	shm := filepath.Join(dir, "ivshmem")
	mem := make([]byte, 1<<20)
	binary.LittleEndian.PutUint32(mem, ivshmemHostMagic)
	if err := os.WriteFile(shm, mem, 0o600); err != nil {
		t.Fatal(err)
	}

	events := make(chan string, 64)
	vm := startQMPVM(t, pc.Config{Kernel: elf, Reboot: true}, dir, func(ev string) { events <- ev })
	m, out, mon := vm.m, vm.out, vm.mon

	deadline := time.Now().Add(2 * runTimeout)
	for !strings.Contains(out.String(), "REBOOT-READY\n") {
		if time.Now().After(deadline) || strings.Contains(out.String(), "RESULT FAIL") {
			t.Fatalf("guest not ready:\n%s", indent(out.String()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, cmd := range []string{
		fmt.Sprintf(`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"rb0","file":{"driver":"file","filename":%q}}}`, disk),
		`{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","id":"rbdisk","drive":"rb0","addr":"0x7"}}`,
		fmt.Sprintf(`{"execute":"device_add","arguments":{"driver":"ivshmem-plain","id":"rbshm","shm":%q,"size":"1M"}}`, shm),
	} {
		if _, err := mon.Run([]byte(cmd)); err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
	}

	r := <-vm.done
	r.Serial = out.String()
	t.Logf("guest exit %v (err %v); serial:\n%s", r.Reason, r.Err, indent(r.Serial))
	mustPass(t, r)
	for _, want := range []string{"BOOT 1 blk=7 ivshmem=", "RESETTING", "BOOT 2 blk=7 ivshmem=", "REBOOT-OK"} {
		if !strings.Contains(r.Serial, want) {
			t.Fatalf("serial lacks %q", want)
		}
	}
	var got []string
	for len(events) > 0 {
		got = append(got, <-events)
	}
	if strings.Join(got, " ") != "RESET SHUTDOWN" {
		t.Fatalf("events %q, want RESET then SHUTDOWN", got)
	}
	// The devices are still the machine's, with their ids.
	raw, err := mon.Run([]byte(`{"execute":"query-pci"}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{`"qdev_id":"rbdisk"`, `"qdev_id":"rbshm"`} {
		if !strings.Contains(string(raw), id) {
			t.Fatalf("query-pci after the reboot lacks %s: %s", id, raw)
		}
	}
	var qb struct {
		Return []qmp.BlockInfo `json:"return"`
	}
	raw, err = mon.Run([]byte(`{"execute":"query-block"}`))
	if err != nil || json.Unmarshal(raw, &qb) != nil || len(qb.Return) != 1 || qb.Return[0].Qdev != "rbdisk" {
		t.Fatalf("query-block after the reboot: %s (%v)", raw, err)
	}
	if got, err := os.ReadFile(shm); err != nil || binary.LittleEndian.Uint32(got[0x100:]) != 2 {
		t.Fatalf("boot counter in the shared memory: %v", err)
	}
	m.Close()
	if out, err := exec.Command(qemuImg, "check", disk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check: %v\n%s", err, out)
	}
	rawPath := filepath.Join(dir, "hot.raw")
	if out, err := exec.Command(qemuImg, "convert", "-O", "raw", disk, rawPath).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	data, err := os.ReadFile(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	for s := 128; s < 136; s++ {
		for i := 0; i < 512; i++ {
			if want := byte(s*13 + i*7 + 0xa5); data[s*512+i] != want {
				t.Fatalf("image byte %d of sector %d = %#x, want %#x", i, s, data[s*512+i], want)
			}
		}
	}
}
