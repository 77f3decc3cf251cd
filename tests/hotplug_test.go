//go:build amd64

package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	goqmp "github.com/digitalocean/go-qemu/qmp"

	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/tests/guest"
)

// TestHotplugQMP hot-plugs a qcow2 virtio-blk disk into a running guest
// with a QMP client nobody here wrote (go-qemu), lets the guest program
// (progs/hotplug.c) answer the ACPI hotplug interface, use the disk and
// eject it on device_del, and checks DEVICE_DELETED, query-pci, the
// refusals QEMU gives, and the image on the host with qemu-img.
func TestHotplugQMP(t *testing.T) {
	testutil.NeedKVM(t)
	qemuImg := testutil.NeedTool(t, "qemu-img")
	elf := guest.Build(t, "hotplug.c")
	dir := t.TempDir()
	disk := newQcow2(t, "16M")
	vm := startQMPVM(t, pc.Config{Kernel: elf}, dir, nil)
	out, mon := vm.out, vm.mon
	waitSerial := func(what string) string {
		t.Helper()
		// Whole lines only: the guest may be half-way through printing one.
		re := regexp.MustCompile(`(?m)^` + what + `[^\n]*\n`)
		deadline := time.Now().Add(2 * runTimeout)
		for time.Now().Before(deadline) {
			s := out.String()
			if l := re.FindString(s); l != "" {
				return strings.TrimSpace(l)
			}
			if strings.Contains(s, "RESULT FAIL") {
				t.Fatalf("guest failed while waiting for %q:\n%s", what, indent(s))
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("guest never printed %q:\n%s", what, indent(out.String()))
		return ""
	}

	evch, _ := mon.Events(context.Background())
	events := make(chan goqmp.Event, 32)
	go func() {
		for ev := range evch {
			events <- ev
		}
	}()
	qmpRun := func(cmd string) (map[string]any, error) {
		raw, err := mon.Run([]byte(cmd))
		if err != nil {
			return nil, err
		}
		var r map[string]any
		return r, json.Unmarshal(raw, &r)
	}
	mustExec := func(cmd string) map[string]any {
		t.Helper()
		r, err := qmpRun(cmd)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		return r
	}
	mustFail := func(cmd, want string) {
		t.Helper()
		if _, err := qmpRun(cmd); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: error %v, want one containing %q", cmd, err, want)
		}
	}

	waitSerial("HOTPLUG-READY")
	mustExec(fmt.Sprintf(`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"hp0","file":{"driver":"file","filename":%q}}}`, disk))
	mustFail(`{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","id":"bad","drive":"hp0","addr":"0x20"}}`, "invalid value")
	mustFail(`{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","id":"bad","drive":"nosuchnode"}}`, "nosuchnode")
	mustExec(`{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","id":"hpdisk","drive":"hp0","addr":"0x6"}}`)
	mustFail(`{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","id":"hpdisk","drive":"hp0"}}`, "Duplicate")
	mustFail(`{"execute":"device_add","arguments":{"driver":"virtio-blk-pci","id":"other","file":"/dev/null","addr":"0x6"}}`, "in use")

	r := mustExec(`{"execute":"query-pci"}`)
	var found bool
	for _, d := range r["return"].([]any)[0].(map[string]any)["devices"].([]any) {
		dev := d.(map[string]any)
		if dev["qdev_id"] == "hpdisk" {
			id := dev["id"].(map[string]any)
			if dev["slot"].(float64) != 6 || id["vendor"].(float64) != 0x1af4 || id["device"].(float64) != 0x1042 {
				t.Fatalf("query-pci entry %v", dev)
			}
			found = true
		}
	}
	if !found {
		t.Fatalf("hpdisk not in query-pci: %v", r)
	}
	if l := waitSerial("UP slot="); !strings.HasPrefix(l, "UP slot=6 id=") {
		t.Fatalf("guest saw %q", l)
	}
	waitSerial("HOTPLUG-IO-OK")

	// Pause the guest so that a second device_del certainly comes before it
	// acts; it must be refused and change nothing.
	mustExec(`{"execute":"stop"}`)
	mustExec(`{"execute":"device_del","arguments":{"id":"hpdisk"}}`)
	mustFail(`{"execute":"device_del","arguments":{"id":"hpdisk"}}`, "already in the process of unplug")
	mustFail(`{"execute":"device_del","arguments":{"id":"ghost"}}`, "not found")
	mustExec(`{"execute":"cont"}`)

	deadline := time.After(2 * runTimeout)
	for deleted := false; !deleted; {
		select {
		case ev := <-events:
			if ev.Event == "DEVICE_DELETED" {
				if ev.Data["device"] != "hpdisk" {
					t.Fatalf("DEVICE_DELETED for %v", ev.Data)
				}
				deleted = true
			}
		case <-deadline:
			t.Fatalf("no DEVICE_DELETED; serial:\n%s", indent(out.String()))
		}
	}
	r = mustExec(`{"execute":"query-pci"}`)
	if b, _ := json.Marshal(r); bytes.Contains(b, []byte(`"hpdisk"`)) {
		t.Fatalf("hpdisk still in query-pci after DEVICE_DELETED: %s", b)
	}

	res := <-vm.done
	serial := out.String()
	res.Serial = serial
	t.Logf("guest exit %v (err %v); serial:\n%s", res.Reason, res.Err, indent(serial))
	mustPass(t, res)
	if !strings.Contains(serial, "EJECTED slot=6") {
		t.Fatal("guest did not report the eject")
	}

	// The node outlives the device until blockdev-del, which closes it.
	mustExec(`{"execute":"blockdev-del","arguments":{"node-name":"hp0"}}`)
	if out, err := osexec(qemuImg, "check", disk); err != nil {
		t.Fatalf("qemu-img check after hot-unplug: %v\n%s", err, out)
	}
	rawPath := filepath.Join(dir, "hot.raw")
	if out, err := osexec(qemuImg, "convert", "-O", "raw", disk, rawPath); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	for s := 64; s < 72; s++ {
		for i := 0; i < 512; i++ {
			if want := byte(s*37 + i*11 + 0x5c); raw[s*512+i] != want {
				t.Fatalf("image byte %d of sector %d = %#x, want %#x", i, s, raw[s*512+i], want)
			}
		}
	}
}

func osexec(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
