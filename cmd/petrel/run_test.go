//go:build amd64

package main

import (
	"io"
	"testing"

	"github.com/petrel-vmm/petrel/machine/pc"
)

func TestParseRunArgs(t *testing.T) {
	o, err := parseRunArgs([]string{"-kernel", "vmlinuz", "-initrd", "rd.img", "-append", "console=ttyS0 quiet",
		"-m", "1G", "-smp", "cpus=2", "-cpu", "host,-cx16,-xsave", "-nographic", "-no-reboot",
		"-disk", "a.qcow2,readonly=on,cache=none,serial=S1,id=d0",
		"-drive", "file=b.img,if=virtio,format=raw,cache=writeback,id=d1",
		"-serial", "file:/tmp/x", "-qmp", "unix:/tmp/q.sock,server,wait=off"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if c.Kernel != "vmlinuz" || c.Initrd != "rd.img" || c.Cmdline != "console=ttyS0 quiet" || c.MemoryMiB != 1024 ||
		c.CPUs != 2 || c.CPU != "host,-cx16,-xsave" || !o.noReboot || o.serial != "file:/tmp/x" {
		t.Fatalf("config %+v", c)
	}
	want := []pc.DiskConfig{
		{Path: "a.qcow2", ReadOnly: true, DirectIO: true, Serial: "S1", ID: "d0"},
		{Path: "b.img", Format: "raw", ID: "d1"},
	}
	if len(c.Disks) != 2 || c.Disks[0] != want[0] || c.Disks[1] != want[1] {
		t.Fatalf("disks %+v", c.Disks)
	}
}

func TestParseRunArgsErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-kernel", "k", "-m", "0"},
		{"-kernel", "k", "-m", "1.5K"},
		{"-kernel", "k", "-m", "2T"},
		{"-kernel", "k", "-smp", "0"},
		{"-kernel", "k", "-smp", "x"},
		{"-kernel", "k", "-disk", "format=raw"},
		{"-kernel", "k", "-disk", "a.img,format=vmdk"},
		{"-kernel", "k", "-disk", "a.img,bogus=1"},
		{"-kernel", "k", "-drive", "file=a,if=ide"},
		{"-kernel", "k", "-drive", "if=virtio"},
		{"-kernel", "k", "-drive", "file=a,readonly=maybe"},
		{"-kernel", "k", "-serial", "pty"},
		{"-kernel", "k", "-qmp", "stdio"},
		{"-kernel", "k", "-boot-protocol", "bios"},
		{"-kernel", "k", "extra"},
	} {
		if _, err := parseRunArgs(args, io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

func TestParseMemSize(t *testing.T) {
	for in, want := range map[string]int{"512": 512, "512M": 512, "2G": 2048, "1.5G": 1536, "size=64M": 64, "4096K": 4, "3g": 3072} {
		if got, err := parseMemSize(in); err != nil || got != want {
			t.Errorf("parseMemSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestEscapeReader(t *testing.T) {
	quit := 0
	var help []byte
	e := &escapeReader{out: writerFunc(func(p []byte) { help = append(help, p...) }), quit: func() { quit++ }}
	p := []byte("ab\x01\x01c\x01hd\x01")
	n := e.filter(p)
	if string(p[:n]) != "ab\x01cd" || len(help) == 0 || quit != 0 {
		t.Fatalf("filtered %q help %q quit %d", p[:n], help, quit)
	}
	// The escape state carries across reads.
	p = []byte("x")
	if n := e.filter(p); n != 0 || quit != 1 {
		t.Fatalf("Ctrl-a x split across reads: n %d quit %d", n, quit)
	}
}

type writerFunc func(p []byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

func TestInputHubSessions(t *testing.T) {
	pr, pw := io.Pipe()
	h := newInputHub(pr)
	s1 := h.session()
	go pw.Write([]byte("abc"))
	buf := make([]byte, 2)
	if n, _ := s1.Read(buf); string(buf[:n]) != "ab" {
		t.Fatalf("first read %q", buf[:n])
	}
	if n, _ := s1.Read(buf); string(buf[:n]) != "c" {
		t.Fatalf("second read %q", buf[:n])
	}
	s1.Close()
	if _, err := s1.Read(buf); err != io.EOF {
		t.Fatalf("closed session read: %v", err)
	}
	// The next machine's session gets the next input.
	s2 := h.session()
	go pw.Write([]byte("z"))
	if n, _ := s2.Read(buf); string(buf[:n]) != "z" {
		t.Fatalf("new session read %q", buf[:n])
	}
	pw.Close()
	if _, err := s2.Read(buf); err != io.EOF {
		t.Fatalf("read after input ended: %v", err)
	}
}
