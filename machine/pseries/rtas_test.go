package pseries

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const blk = 0x4000 // where the tests put RTAS parameter blocks

func TestRTASBlockErrors(t *testing.T) {
	v := newTestVM(t, 1)
	// Unknown token: H_PARAMETER and status -3 in rets[0].
	v.rtasBlock(blk, 0x1234, 1)
	if got := v.Hypercall(v.cpus[0], HRTAS, &[9]uint64{blk}); got != HParameter {
		t.Fatalf("unknown token: %d", got)
	}
	if r := v.rets(blk, 0, 1); r[0] != RTASParameterError {
		t.Fatalf("unknown token status %d", r[0])
	}
	// Unknown token with nret 0: nothing written past the block.
	v.rtasBlock(blk, rtasTokenBase+uint32(len(rtasServices)), 0)
	if got := v.Hypercall(v.cpus[0], HRTAS, &[9]uint64{blk}); got != HParameter {
		t.Fatalf("token past the table: %d", got)
	}
	if v.be32(blk+12) != 0xdeadbeef {
		t.Fatal("wrote a status with nret 0")
	}
	if v.UnknownRTAS() != 2 {
		t.Fatalf("unknown RTAS counter %d", v.UnknownRTAS())
	}
	// Blocks outside guest memory, or running off it: H_PARAMETER, no write.
	for _, addr := range []uint64{testLowSize, testLowSize - 8, testHighBase + testHighSize - 12, 1 << 40} {
		if got := v.Hypercall(v.cpus[0], HRTAS, &[9]uint64{addr}); got != HParameter {
			t.Errorf("block at %#x: %d", addr, got)
		}
	}
	// A header whose cells run past RAM.
	tok := token(t, "get-time-of-day")
	addr := uint64(testLowSize - 16)
	v.putBE32(addr, tok)
	v.putBE32(addr+4, 0)
	v.putBE32(addr+8, 8)
	if got := v.Hypercall(v.cpus[0], HRTAS, &[9]uint64{addr}); got != HParameter {
		t.Errorf("rets past RAM: %d", got)
	}
	if v.be32(addr+12) != 0 {
		t.Error("wrote into a block that runs past RAM")
	}
	// A header-only block (no cells) ending exactly at the end of RAM is
	// in memory: it is served (its count error has nowhere to be written).
	end := uint64(testLowSize - 12)
	v.putBE32(end, token(t, "system-reboot"))
	v.putBE32(end+4, 0)
	v.putBE32(end+8, 0)
	if got := v.Hypercall(v.cpus[0], HRTAS, &[9]uint64{end}); got != HSuccess || v.ExitReason() != ExitNone {
		t.Errorf("header-only block at the end of RAM: %d, exit %v", got, v.ExitReason())
	}
	// Huge counts are refused before any arithmetic.
	v.putBE32(blk, tok)
	v.putBE32(blk+4, 0xffffffff)
	v.putBE32(blk+8, 0xffffffff)
	if got := v.Hypercall(v.cpus[0], HRTAS, &[9]uint64{blk}); got != HParameter {
		t.Errorf("huge counts: %d", got)
	}
	// The top four address bits are ignored, as in real mode.
	if ret, r := v.rtas(0, blk, "event-scan", 1, 0, 0, 0, 0); ret != HSuccess || r[0] != RTASNoErrorsFound {
		t.Fatalf("event-scan: %d %v", ret, r)
	}
	v.rtasBlock(blk, token(t, "event-scan"), 1, 0, 0, 0, 0)
	if got := v.Hypercall(v.cpus[0], HRTAS, &[9]uint64{0xc000000000000000 | blk}); got != HSuccess {
		t.Fatalf("real-mode address alias: %d", got)
	}
}

// TestRTASCountChecks calls every service with wrong nargs or nret: each
// must answer status -3 and change nothing else.
func TestRTASCountChecks(t *testing.T) {
	v := newTestVM(t, 2)
	good := map[string][2]uint32{
		"display-character": {1, 1}, "get-time-of-day": {0, 8}, "set-time-of-day": {7, 1},
		"power-off": {2, 1}, "system-reboot": {0, 1}, "query-cpu-stopped-state": {1, 2},
		"start-cpu": {3, 1}, "stop-self": {0, 1}, "event-scan": {4, 1}, "check-exception": {6, 1},
		"nvram-fetch": {3, 2}, "nvram-store": {3, 2}, "ibm,set-xive": {3, 1}, "ibm,get-xive": {1, 3},
		"ibm,int-off": {1, 1}, "ibm,int-on": {1, 1}, "read-pci-config": {2, 2},
		"write-pci-config": {3, 1}, "ibm,read-pci-config": {4, 2}, "ibm,write-pci-config": {5, 1},
	}
	if len(good) != len(rtasServices) {
		t.Fatalf("test covers %d services, machine has %d", len(good), len(rtasServices))
	}
	for name, n := range good {
		for _, bad := range [][2]uint32{{n[0] + 1, n[1]}, {n[0], n[1] + 1}, {n[0] + 2, n[1] + 3}} {
			if name == "check-exception" && bad[0] == 7 && bad[1] == 1 {
				continue // 7 arguments is the other valid form
			}
			args := make([]uint32, bad[0])
			ret, r := v.rtas(1, blk, name, bad[1], args...)
			if ret != HSuccess || r[0] != RTASParameterError {
				t.Errorf("%s nargs %d nret %d: ret %d status %d, want -3", name, bad[0], bad[1], ret, r[0])
			}
			for i := 1; i < len(r); i++ {
				if uint32(r[i]) != 0xdeadbeef {
					t.Errorf("%s: wrote ret %d on a count error", name, i)
				}
			}
		}
		if n[0] > 0 {
			ret, r := v.rtas(1, blk, name, n[1], make([]uint32, n[0]-1)...)
			if ret != HSuccess || r[0] != RTASParameterError {
				t.Errorf("%s with too few args: %d %d", name, ret, r[0])
			}
		}
	}
	if v.ExitReason() != ExitNone || v.cpus[1].Running() || v.cpus[1].TakeStop() {
		t.Fatalf("a count error had an effect: exit %v, CPU 1 running %v", v.ExitReason(), v.cpus[1].Running())
	}
	if v.console.String() != "" {
		t.Fatalf("a count error printed %q", v.console.String())
	}
}

func TestRTASDisplayCharacter(t *testing.T) {
	v := newTestVM(t, 1)
	for _, c := range []byte("ok\n") {
		if ret, r := v.rtas(0, blk, "display-character", 1, uint32(c)); ret != HSuccess || r[0] != 0 {
			t.Fatalf("display-character: %d %v", ret, r)
		}
	}
	// The legacy token 0xa reaches the same service.
	v.rtasBlock(blk, rtasDisplayCharacterLegacy, 1, '!')
	if ret := v.Hypercall(v.cpus[0], HRTAS, &[9]uint64{blk}); ret != HSuccess {
		t.Fatalf("legacy token: %d", ret)
	}
	if got := v.console.String(); got != "ok\n!" {
		t.Fatalf("console %q", got)
	}
}

func TestRTASTimeOfDay(t *testing.T) {
	v := newTestVM(t, 1)
	_, r := v.rtas(0, blk, "get-time-of-day", 8)
	want := []int32{0, 2026, 11, 25, 7, 30, 15, 123_000_000}
	for i := range want {
		if r[i] != want[i] {
			t.Fatalf("get-time-of-day %v, want %v", r, want)
		}
	}
	// Set the guest clock back a year and read it again.
	if _, r := v.rtas(0, blk, "set-time-of-day", 1, 2025, 2, 28, 23, 59, 58, 5); r[0] != 0 {
		t.Fatalf("set-time-of-day status %d", r[0])
	}
	_, r = v.rtas(0, blk, "get-time-of-day", 8)
	want = []int32{0, 2025, 2, 28, 23, 59, 58, 5}
	for i := range want {
		if r[i] != want[i] {
			t.Fatalf("after set: %v, want %v", r, want)
		}
	}
	// The offset, not the time, is kept: the guest clock follows the host.
	v.now = func() time.Time { return pinnedNow.Add(3 * time.Second) }
	_, r = v.rtas(0, blk, "get-time-of-day", 8)
	if r[1] != 2025 || r[2] != 3 || r[3] != 1 || r[4] != 0 || r[5] != 0 || r[6] != 1 {
		t.Fatalf("clock did not advance from the set time: %v", r)
	}
	before := v.rtcOffset.Load()
	for _, bad := range [][]uint32{
		{2025, 0, 1, 0, 0, 0, 0}, {2025, 13, 1, 0, 0, 0, 0}, {2025, 4, 31, 0, 0, 0, 0},
		{2025, 2, 29, 0, 0, 0, 0}, {2025, 1, 0, 0, 0, 0, 0}, {2025, 1, 1, 24, 0, 0, 0},
		{2025, 1, 1, 0, 60, 0, 0}, {2025, 1, 1, 0, 0, 60, 0}, {2025, 1, 1, 0, 0, 0, 1e9},
		{1969, 1, 1, 0, 0, 0, 0}, {0xffffffff, 1, 1, 0, 0, 0, 0},
	} {
		if _, r := v.rtas(0, blk, "set-time-of-day", 1, bad...); r[0] != RTASParameterError {
			t.Errorf("set-time-of-day %v: status %d", bad, r[0])
		}
	}
	if v.rtcOffset.Load() != before {
		t.Fatal("a refused set-time-of-day changed the clock")
	}
	// 29 February of a leap year is fine.
	if _, r := v.rtas(0, blk, "set-time-of-day", 1, 2024, 2, 29, 12, 0, 0, 0); r[0] != 0 {
		t.Fatalf("leap day refused: %d", r[0])
	}
}

func TestRTASPowerOffAndReboot(t *testing.T) {
	v := newTestVM(t, 1)
	select {
	case <-v.Done():
		t.Fatal("done before power-off")
	default:
	}
	if _, r := v.rtas(0, blk, "power-off", 1, 0, 0); r[0] != 0 {
		t.Fatalf("power-off status %d", r[0])
	}
	<-v.Done()
	if v.ExitReason() != ExitPowerOff {
		t.Fatalf("exit reason %v", v.ExitReason())
	}
	// The first request wins.
	v.rtas(0, blk, "system-reboot", 1)
	if v.ExitReason() != ExitPowerOff {
		t.Fatalf("exit reason changed to %v", v.ExitReason())
	}
	w := newTestVM(t, 1)
	if _, r := w.rtas(0, blk, "system-reboot", 1); r[0] != 0 || w.ExitReason() != ExitReboot {
		t.Fatalf("system-reboot: %d %v", r[0], w.ExitReason())
	}
}

func TestRTASCPUStartStop(t *testing.T) {
	v := newTestVM(t, 3)
	state := func(id uint32) []int32 { _, r := v.rtas(0, blk, "query-cpu-stopped-state", 2, id); return r }
	if r := state(0); r[0] != 0 || r[1] != 2 {
		t.Fatalf("boot CPU: %v", r)
	}
	if r := state(2); r[0] != 0 || r[1] != 0 {
		t.Fatalf("secondary before start: %v", r)
	}
	if r := state(3); r[0] != RTASParameterError {
		t.Fatalf("unknown CPU: %v", r)
	}
	started := make(chan [2]uint64)
	go func() {
		pc, r3, ok := v.cpus[2].WaitStart(v.Done())
		if ok {
			started <- [2]uint64{pc, r3}
		}
	}()
	if _, r := v.rtas(0, blk, "start-cpu", 1, 2, 0x60, 0xabc); r[0] != 0 {
		t.Fatalf("start-cpu status %d", r[0])
	}
	if got := <-started; got != [2]uint64{0x60, 0xabc} {
		t.Fatalf("CPU 2 started with %#x", got)
	}
	if r := state(2); r[1] != 2 {
		t.Fatalf("after start: %v", r)
	}
	if _, r := v.rtas(0, blk, "start-cpu", 1, 2, 0x60, 0); r[0] != RTASHardwareError {
		t.Fatalf("starting a running CPU: %d", r[0])
	}
	if _, r := v.rtas(0, blk, "start-cpu", 1, 9, 0x60, 0); r[0] != RTASParameterError {
		t.Fatalf("starting an unknown CPU: %d", r[0])
	}
	// stop-self on CPU 2: it stops, writes no status, and the vCPU loop
	// is told to park.
	if ret, r := v.rtas(2, blk, "stop-self", 1); ret != HSuccess || uint32(r[0]) != 0xdeadbeef {
		t.Fatalf("stop-self: %d %v", ret, r)
	}
	if !v.cpus[2].TakeStop() || v.cpus[2].TakeStop() {
		t.Fatal("stop request not reported exactly once")
	}
	if r := state(2); r[1] != 0 {
		t.Fatalf("after stop-self: %v", r)
	}
	// Started again before it parks: WaitStart returns at once.
	v.rtas(0, blk, "start-cpu", 1, 2, 0x100, 7)
	if pc, r3, ok := v.cpus[2].WaitStart(v.Done()); !ok || pc != 0x100 || r3 != 7 {
		t.Fatalf("restart: %#x %d %v", pc, r3, ok)
	}
	// A parked CPU is released by shutdown.
	go v.RequestExit(ExitPowerOff)
	if _, _, ok := v.cpus[1].WaitStart(v.Done()); ok {
		t.Fatal("WaitStart reported a start on shutdown")
	}
}

func TestRTASEventScanCheckException(t *testing.T) {
	v := newTestVM(t, 1)
	if _, r := v.rtas(0, blk, "event-scan", 1, 0xffffffff, 0, 0x8000, 2048); r[0] != RTASNoErrorsFound {
		t.Fatalf("event-scan %d", r[0])
	}
	for _, n := range []int{6, 7} {
		if _, r := v.rtas(0, blk, "check-exception", 1, make([]uint32, n)...); r[0] != RTASNoErrorsFound {
			t.Fatalf("check-exception with %d args: %d", n, r[0])
		}
	}
	if _, r := v.rtas(0, blk, "check-exception", 1, make([]uint32, 5)...); r[0] != RTASParameterError {
		t.Fatalf("check-exception with 5 args: %d", r[0])
	}
}

func TestRTASNVRAM(t *testing.T) {
	v := newTestVM(t, 1)
	msg := []byte("petrel nvram partition")
	copy(v.low[0x9000:], msg)
	if _, r := v.rtas(0, blk, "nvram-store", 2, 100, 0x9000, uint32(len(msg))); r[0] != 0 || r[1] != int32(len(msg)) {
		t.Fatalf("nvram-store %v", r)
	}
	if _, r := v.rtas(0, blk, "nvram-fetch", 2, 100, testHighBase+0x10, uint32(len(msg))); r[0] != 0 || r[1] != int32(len(msg)) {
		t.Fatalf("nvram-fetch %v", r)
	}
	if !bytes.Equal(v.high[0x10:0x10+len(msg)], msg) {
		t.Fatalf("fetched %q", v.high[0x10:0x10+len(msg)])
	}
	size := uint32(v.NVRAM().Size())
	// The whole NVRAM at once is fine; one byte more is not.
	if _, r := v.rtas(0, blk, "nvram-fetch", 2, 0, 0x10000, size); r[0] != 0 || r[1] != int32(size) {
		t.Fatalf("whole fetch %v", r)
	}
	snapshot := append([]byte(nil), v.low...)
	for _, c := range []struct {
		name        string
		off, buf, n uint32
		status      int32
	}{
		{"nvram-fetch", size - 4, 0x9000, 5, RTASParameterError},
		{"nvram-fetch", size + 1, 0x9000, 0, RTASParameterError},
		{"nvram-fetch", 0xffffffff, 0x9000, 2, RTASParameterError},
		{"nvram-fetch", 0, testLowSize - 4, 8, RTASHardwareError},
		{"nvram-store", 1, 0x9000, size, RTASParameterError},
		{"nvram-store", 0, testLowSize + 16, 8, RTASHardwareError},
	} {
		_, r := v.rtas(0, blk, c.name, 2, c.off, c.buf, c.n)
		if r[0] != c.status || r[1] != 0 {
			t.Errorf("%s off %#x buf %#x len %#x: %v, want status %d", c.name, c.off, c.buf, c.n, r, c.status)
		}
	}
	// Only the parameter block itself may differ.
	if !bytes.Equal(snapshot[:blk], v.low[:blk]) || !bytes.Equal(snapshot[blk+0x100:], v.low[blk+0x100:]) {
		t.Fatal("a refused NVRAM call changed guest memory")
	}
	got := make([]byte, len(msg))
	v.NVRAM().ReadAt(got, 100)
	if !bytes.Equal(got, msg) {
		t.Fatal("a refused store changed the NVRAM")
	}
}

func TestNVRAMFileBacking(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nvram.bin")
	if err := os.WriteFile(path, []byte("seed"), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := NewNVRAM(16<<10, path)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	n.ReadAt(got, 0)
	if string(got) != "seed" {
		t.Fatalf("loaded %q", got)
	}
	if err := n.WriteAt([]byte("stored"), 1000); err != nil {
		t.Fatal(err)
	}
	// Written through before Close.
	disk, _ := os.ReadFile(path)
	if len(disk) != 16<<10 || string(disk[1000:1006]) != "stored" {
		t.Fatalf("file is %d bytes, holds %q", len(disk), disk[1000:1006])
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewNVRAM(8<<10, path); err == nil {
		t.Fatal("a file larger than the NVRAM was accepted")
	}
	for _, bad := range []int{1, 4 << 10, 2 << 20} {
		if _, err := NewNVRAM(bad, ""); err == nil {
			t.Errorf("size %d accepted", bad)
		}
	}
	if err := n.WriteAt([]byte("x"), 16<<10); err == nil {
		t.Fatal("write past the end accepted")
	}
}

func TestRTASXive(t *testing.T) {
	v := newTestVM(t, 2)
	irq := uint32(ICSFirstIRQ + 5)
	if _, r := v.rtas(0, blk, "ibm,get-xive", 3, irq); r[0] != 0 || r[1] != 0 || r[2] != 0xff {
		t.Fatalf("reset state %v", r)
	}
	if _, r := v.rtas(0, blk, "ibm,set-xive", 1, irq, 1, 5); r[0] != 0 {
		t.Fatalf("set-xive %d", r[0])
	}
	if _, r := v.rtas(0, blk, "ibm,get-xive", 3, irq); r[1] != 1 || r[2] != 5 {
		t.Fatalf("after set %v", r)
	}
	if e, _ := v.ICS().Get(irq); !e.Enabled() {
		t.Fatal("source not enabled")
	}
	v.rtas(0, blk, "ibm,int-off", 1, irq)
	if _, r := v.rtas(0, blk, "ibm,get-xive", 3, irq); r[1] != 1 || r[2] != 0xff {
		t.Fatalf("after int-off %v", r)
	}
	if e, _ := v.ICS().Get(irq); e.Enabled() || e.SavedPriority != 5 {
		t.Fatalf("int-off entry %+v", e)
	}
	v.rtas(0, blk, "ibm,int-on", 1, irq)
	if _, r := v.rtas(0, blk, "ibm,get-xive", 3, irq); r[1] != 1 || r[2] != 5 {
		t.Fatalf("after int-on %v", r)
	}
	last := uint32(ICSFirstIRQ + ICSNumIRQs - 1)
	for _, c := range []struct {
		name string
		args []uint32
		nret uint32
	}{
		{"ibm,set-xive", []uint32{ICSFirstIRQ - 1, 0, 5}, 1},
		{"ibm,set-xive", []uint32{last + 1, 0, 5}, 1},
		{"ibm,set-xive", []uint32{irq, 2, 5}, 1},     // no server 2
		{"ibm,set-xive", []uint32{irq, 0, 0x100}, 1}, // priority too big
		{"ibm,get-xive", []uint32{0}, 3},
		{"ibm,int-off", []uint32{last + 1}, 1},
		{"ibm,int-on", []uint32{0xffffffff}, 1},
	} {
		if _, r := v.rtas(0, blk, c.name, c.nret, c.args...); r[0] != RTASParameterError {
			t.Errorf("%s %v: status %d", c.name, c.args, r[0])
		}
	}
	if e, _ := v.ICS().Get(irq); e.Server != 1 || e.Priority != 5 {
		t.Fatalf("refused calls changed the entry: %+v", e)
	}
	if _, r := v.rtas(0, blk, "ibm,set-xive", 1, last, 0, 0); r[0] != 0 {
		t.Fatalf("last source: %d", r[0])
	}
}

func TestRTASPCIConfig(t *testing.T) {
	v := newTestVM(t, 1)
	dev := NewConfigHeader(0x1af4, 0x1041, 0x020000, true)
	v.PCI().Add(0, 2<<3, dev) // 00:02.0
	addr := func(bus, devfn, reg uint32) uint32 { return (reg&0xf00)<<20 | bus<<16 | devfn<<8 | reg&0xff }
	hi, lo := uint32(DefaultBUID>>32), uint32(DefaultBUID&0xffffffff)
	cases := []struct {
		name   string
		args   []uint32
		nret   uint32
		status int32
		val    uint32
	}{
		{"read-pci-config", []uint32{addr(0, 0x10, 0), 4}, 2, 0, 0x10411af4},
		{"read-pci-config", []uint32{addr(0, 0x10, 2), 2}, 2, 0, 0x1041},
		{"read-pci-config", []uint32{addr(0, 0x10, 0xb), 1}, 2, 0, 0x02},
		{"ibm,read-pci-config", []uint32{addr(0, 0x10, 0), hi, lo, 2}, 2, 0, 0x1af4},
		{"read-pci-config", []uint32{addr(0, 0x18, 0), 4}, 2, 0, 0xffffffff}, // absent
		{"read-pci-config", []uint32{addr(3, 0x10, 0), 2}, 2, 0, 0xffff},     // absent bus
		{"ibm,read-pci-config", []uint32{addr(0, 0x11, 0), hi, lo, 1}, 2, 0, 0xff},
		{"read-pci-config", []uint32{addr(0, 0x10, 0x100), 4}, 2, 0, 0}, // extended space
		{"read-pci-config", []uint32{addr(0, 0x10, 0), 3}, 2, RTASHardwareError, 0xdeadbeef},
		{"read-pci-config", []uint32{addr(0, 0x10, 2), 4}, 2, RTASHardwareError, 0xdeadbeef},
		{"read-pci-config", []uint32{addr(0, 0x10, 1), 2}, 2, RTASHardwareError, 0xdeadbeef},
		{"ibm,read-pci-config", []uint32{addr(0, 0x10, 0), hi, lo + 1, 4}, 2, RTASParameterError, 0xdeadbeef},
		{"ibm,read-pci-config", []uint32{addr(0, 0x10, 0), 0, 0, 4}, 2, RTASParameterError, 0xdeadbeef},
	}
	for _, c := range cases {
		_, r := v.rtas(0, blk, c.name, c.nret, c.args...)
		if r[0] != c.status || uint32(r[1]) != c.val {
			t.Errorf("%s %#x: %d %#x, want %d %#x", c.name, c.args, r[0], uint32(r[1]), c.status, c.val)
		}
	}
	// Writes: the command register takes its writable bits only.
	if _, r := v.rtas(0, blk, "write-pci-config", 1, addr(0, 0x10, 4), 2, 0xffff); r[0] != 0 {
		t.Fatalf("write %d", r[0])
	}
	if got := dev.ReadConfig(4, 2); got != 0x0407 {
		t.Fatalf("command %#x", got)
	}
	if _, r := v.rtas(0, blk, "ibm,write-pci-config", 1, addr(0, 0x10, 0x3c), hi, lo, 1, 0x1ab); r[0] != 0 {
		t.Fatalf("ibm write %d", r[0])
	}
	if got := dev.ReadConfig(0x3c, 1); got != 0xab {
		t.Fatalf("interrupt line %#x", got)
	}
	// Read-only ID, absent device, bad size/alignment, bad BUID.
	v.rtas(0, blk, "write-pci-config", 1, addr(0, 0x10, 0), 4, 0)
	if got := dev.ReadConfig(0, 4); got != 0x10411af4 {
		t.Fatalf("IDs were written: %#x", got)
	}
	if _, r := v.rtas(0, blk, "write-pci-config", 1, addr(0, 0x20, 4), 2, 1); r[0] != 0 {
		t.Fatalf("write to an absent device: %d", r[0])
	}
	for _, c := range []struct {
		name   string
		args   []uint32
		status int32
	}{
		{"write-pci-config", []uint32{addr(0, 0x10, 4), 8, 0}, RTASHardwareError},
		{"write-pci-config", []uint32{addr(0, 0x10, 5), 2, 0}, RTASHardwareError},
		{"ibm,write-pci-config", []uint32{addr(0, 0x10, 4), 1, 2, 2, 0}, RTASParameterError},
	} {
		if _, r := v.rtas(0, blk, c.name, 1, c.args...); r[0] != c.status {
			t.Errorf("%s %#x: %d, want %d", c.name, c.args, r[0], c.status)
		}
	}
	if got := dev.ReadConfig(4, 2); got != 0x0407 {
		t.Fatalf("a refused write changed the command register: %#x", got)
	}
	// A plain PCI function has no extended space.
	v.PCI().Add(0, 3<<3, NewConfigHeader(1, 2, 3, false))
	if _, r := v.rtas(0, blk, "read-pci-config", 2, addr(0, 0x18, 0x100), 4); r[0] != RTASHardwareError {
		t.Fatalf("extended read of a PCI function: %d", r[0])
	}
}
