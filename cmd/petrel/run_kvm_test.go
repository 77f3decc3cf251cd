package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

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
	if code := runMain([]string{"-kernel", filepath.Join(dir, "missing"), "-serial", "none"}); code == 0 {
		t.Fatal("missing kernel exited 0")
	}
}
