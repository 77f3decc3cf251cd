//go:build amd64

package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

// helloELF is a PVH ELF whose 32-bit code prints "hi" on COM1 and powers
// off through ACPI PM1a_CNT (SLP_TYP 5 | SLP_EN).
func helloELF() []byte {
	code := []byte{
		0x66, 0xba, 0xf8, 0x03, 0xb0, 'h', 0xee, 0xb0, 'i', 0xee,
		0x66, 0xba, 0x04, 0x06, 0x66, 0xb8, 0x00, 0x34, 0x66, 0xef, 0xf4,
	}
	le := binary.LittleEndian
	b := make([]byte, 0x1000+len(code))
	copy(b, "\x7fELF\x02\x01\x01")
	le.PutUint16(b[16:], 2)
	le.PutUint16(b[18:], 62)
	le.PutUint32(b[20:], 1) // EV_CURRENT
	le.PutUint64(b[32:], 64)
	le.PutUint16(b[54:], 56)
	le.PutUint16(b[56:], 2)
	ph := b[64:]
	le.PutUint32(ph, 1) // PT_LOAD
	le.PutUint64(ph[8:], 0x1000)
	le.PutUint64(ph[24:], 0x100000)
	le.PutUint64(ph[32:], uint64(len(code)))
	le.PutUint64(ph[40:], uint64(len(code)))
	ph = b[120:]
	le.PutUint32(ph, 4) // PT_NOTE
	le.PutUint64(ph[8:], 0x200)
	le.PutUint64(ph[32:], 24)
	n := b[0x200:]
	le.PutUint32(n, 4)
	le.PutUint32(n[4:], 8)
	le.PutUint32(n[8:], 18) // XEN_ELFNOTE_PHYS32_ENTRY
	copy(n[12:], "Xen\x00")
	le.PutUint64(n[16:], 0x100000)
	copy(b[0x1000:], code)
	return b
}

func TestRunMainBootsAndPowersOff(t *testing.T) {
	testutil.NeedKVM(t)
	dir := t.TempDir()
	k := filepath.Join(dir, "hello.elf")
	if err := os.WriteFile(k, helloELF(), 0o644); err != nil {
		t.Fatal(err)
	}
	ser := filepath.Join(dir, "serial.txt")
	sock := filepath.Join(dir, "qmp.sock")
	code := runMain([]string{"-kernel", k, "-m", "32M", "-smp", "2", "-serial", "file:" + ser,
		"-qmp", "unix:" + sock + ",server,wait=off", "-no-reboot"})
	if code != 0 {
		t.Fatalf("exit code %d", code)
	}
	got, err := os.ReadFile(ser)
	if err != nil || string(got) != "hi" {
		t.Fatalf("serial %q, %v", got, err)
	}
	// A guest reset (i8042 0xFE) with -no-reboot ends the run cleanly.
	reset := helloELF()
	copy(reset[0x1000:], []byte{0xb0, 0xfe, 0xe6, 0x64, 0xf4}) // mov al, 0xfe; out 0x64, al; hlt
	rk := filepath.Join(dir, "reset.elf")
	if err := os.WriteFile(rk, reset, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := runMain([]string{"-kernel", rk, "-m", "16M", "-serial", "none", "-no-reboot"}); code != 0 {
		t.Fatalf("reset with -no-reboot: exit code %d", code)
	}
	// A triple fault is an error exit.
	tf := helloELF()
	copy(tf[0x1000:], []byte{0x31, 0xc9, 0xf7, 0xf1}) // xor ecx, ecx; div ecx (no IDT)
	tk := filepath.Join(dir, "tf.elf")
	if err := os.WriteFile(tk, tf, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := runMain([]string{"-kernel", tk, "-m", "16M", "-serial", "none"}); code == 0 {
		t.Fatal("triple fault exited 0")
	}
	if code := runMain([]string{"-kernel", filepath.Join(dir, "missing"), "-serial", "none"}); code == 0 {
		t.Fatal("missing kernel exited 0")
	}
}

func TestRunMainQMP(t *testing.T) {
	testutil.NeedKVM(t)
	dir := t.TempDir()
	k := filepath.Join(dir, "spin.elf")
	elf := helloELF()
	copy(elf[0x1000:], []byte{0xeb, 0xfe}) // jmp $: runs until QMP quits it
	if err := os.WriteFile(k, elf, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "qmp.sock")
	done := make(chan int, 1)
	go func() {
		done <- runMain([]string{"-kernel", k, "-m", "16M", "-serial", "none", "-qmp", "unix:" + sock + ",server"})
	}()
	var conn net.Conn
	for i := 0; i < 500 && conn == nil; i++ {
		conn, _ = net.Dial("unix", sock)
		if conn == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if conn == nil {
		t.Fatal("QMP socket never accepted")
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	dec := json.NewDecoder(conn)
	recv := func() map[string]any {
		t.Helper()
		for {
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				t.Fatalf("reading QMP: %v", err)
			}
			if _, ev := m["event"]; !ev {
				return m
			}
		}
	}
	cmd := func(c string) map[string]any {
		t.Helper()
		fmt.Fprintf(conn, `{"execute": %q}`+"\n", c)
		return recv()
	}
	if g := recv(); g["QMP"] == nil {
		t.Fatalf("greeting %v", g)
	}
	cmd("qmp_capabilities")
	status := func() string {
		r := cmd("query-status")
		ret, _ := r["return"].(map[string]any)
		s, _ := ret["status"].(string)
		return s
	}
	// The VM starts once the client connected (wait is the default).
	for i := 0; i < 100 && status() != "running"; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if s := status(); s != "running" {
		t.Fatalf("status %q, want running", s)
	}
	cmd("stop")
	if s := status(); s != "paused" {
		t.Fatalf("status after stop %q", s)
	}
	cmd("cont")
	if s := status(); s != "running" {
		t.Fatalf("status after cont %q", s)
	}
	if r := cmd("query-pci"); r["return"] == nil {
		t.Fatalf("query-pci: %v", r)
	}
	cmd("quit")
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit code %d after quit", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("petrel run did not exit after quit")
	}
}
