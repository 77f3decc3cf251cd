package pseries

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/firmware/fdt"
)

// linuxGuest replays what a Linux pseries kernel does, with its data laid
// out in simulated guest memory the way the kernel lays it out, and every
// call made through Machine.Hypercall, the function the KVM_EXIT_PAPR_HCALL
// handler calls.
type linuxGuest struct {
	v      *testVM
	t      *testing.T
	tokens map[string]uint32 // read from /rtas, as rtas_token() does
}

// Kernel data addresses (physical; the kernel's virtual addresses are
// these plus 0xc000000000000000).
const (
	rtasArgsAddr = 0xdc000 // struct rtas_args in .data
	hvcBufAddr   = 0xa1000 // hvc_vio's output buffer
	logBufAddr   = 0xa2000 // rtasd's event log buffer
	nvramBufAddr = 0xa4000 // nvram_buf
	kernelVBase  = 0xc000000000000000
)

func newLinuxGuest(t *testing.T, v *testVM) *linuxGuest {
	blob, err := v.DeviceTree(testBoot)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := fdt.Parse(blob)
	if err != nil {
		t.Fatal(err)
	}
	g := &linuxGuest{v: v, t: t, tokens: map[string]uint32{}}
	for _, p := range tr.Lookup("/rtas").Props {
		if len(p.Value) == 4 && !strings.HasPrefix(p.Name, "rtas-") && !strings.HasPrefix(p.Name, "linux,") {
			g.tokens[p.Name] = binary.BigEndian.Uint32(p.Value)
		}
	}
	return g
}

// rtasCall is Linux's rtas_call(token, nargs, nret, outputs, ...): fill
// the global struct rtas_args (be32 token, nargs, nret, args[16], then the
// rets pointer = &args[nargs]), zero the rets, enter RTAS with r3 = its
// physical address; the RTAS stub moves r3 to r4 and does H_RTAS. Returns
// rets[0] and the outputs rets[1..].
func (g *linuxGuest) rtasCall(cpu int, name string, nret int, args ...uint32) (int32, []uint32) {
	g.t.Helper()
	tok, ok := g.tokens[name]
	if !ok {
		g.t.Fatalf("device tree has no RTAS token for %s", name)
	}
	b, err := g.v.mem.Slice(rtasArgsAddr, 12+16*4+8)
	if err != nil {
		g.t.Fatal(err)
	}
	binary.BigEndian.PutUint32(b[0:], tok)
	binary.BigEndian.PutUint32(b[4:], uint32(len(args)))
	binary.BigEndian.PutUint32(b[8:], uint32(nret))
	for i, a := range args {
		binary.BigEndian.PutUint32(b[12+4*i:], a)
	}
	rets := b[12+4*len(args):]
	for i := 0; i < nret; i++ {
		binary.BigEndian.PutUint32(rets[4*i:], 0)
	}
	// The kernel's rets pointer: a native-endian kernel virtual address.
	binary.BigEndian.PutUint64(b[12+64:], kernelVBase+rtasArgsAddr+12+4*uint64(len(args)))
	regs := [9]uint64{rtasArgsAddr}
	if hret := g.v.Hypercall(g.v.cpus[cpu], HRTAS, &regs); hret != HSuccess {
		g.t.Fatalf("H_RTAS for %s returned %d", name, hret)
	}
	out := make([]uint32, 0, nret)
	for i := 1; i < nret; i++ {
		out = append(out, binary.BigEndian.Uint32(rets[4*i:]))
	}
	status := int32(0)
	if nret > 0 {
		status = int32(binary.BigEndian.Uint32(rets))
	}
	return status, out
}

// hvcPut is hvterm_raw_put_chars: the bytes sit in a buffer in guest
// memory, are loaded as two native longs and passed as cpu_to_be64 of
// each, i.e. packed big-endian into r6 and r7.
func (g *linuxGuest) hvcPut(cpu int, termno uint64, s string) {
	g.t.Helper()
	for len(s) > 0 {
		n := min(len(s), 16)
		buf, _ := g.v.mem.Slice(hvcBufAddr, 16)
		clear(buf)
		copy(buf, s[:n])
		regs := [9]uint64{termno, uint64(n), binary.BigEndian.Uint64(buf[0:]), binary.BigEndian.Uint64(buf[8:])}
		if ret := g.v.Hypercall(g.v.cpus[cpu], HPutTermChar, &regs); ret != HSuccess {
			g.t.Fatalf("H_PUT_TERM_CHAR: %d", ret)
		}
		s = s[n:]
	}
}

func (g *linuxGuest) hcall(cpu int, nr uint64, args ...uint64) (int64, [9]uint64) {
	var regs [9]uint64
	copy(regs[:], args)
	ret := g.v.Hypercall(g.v.cpus[cpu], nr, &regs)
	return ret, regs
}

func TestReplayLinuxBoot(t *testing.T) {
	v := newTestVM(t, 2)
	dev := NewConfigHeader(0x1af4, 0x1000, 0x020000, false) // a device at 00:01.0
	v.PCI().Add(0, 1<<3, dev)
	copy(v.low[0:], "not nvram") // the nvram buffer area must be overwritten
	v.NVRAM().WriteAt([]byte("\x70\x00\x00\x02ibm,rtas-log"), 0)
	g := newLinuxGuest(t, v)

	// prom/early: udbg console through H_PUT_TERM_CHAR on termno 0 (the
	// early debug path names no vty) and then the real vty.
	g.hvcPut(0, 0, "Linux version 6.1.0-petrel (replay)\n")
	// pseries_little_endian_exceptions, then pseries_enable_reloc_on_exc.
	if ret, _ := g.hcall(0, HSetMode, 1, setModeLE, 0, 0); ret != HSuccess {
		t.Fatalf("H_SET_MODE LE: %d", ret)
	}
	if le, _ := v.InterruptsLittleEndian(); !le {
		t.Fatal("LE interrupts not recorded")
	}
	if ret, _ := g.hcall(0, HSetMode, 3, setModeAddrTransMode, 0, 0); ret != HUnsupportedFlag {
		t.Fatalf("H_SET_MODE AIL=3: %d (Linux then keeps relocation off)", ret)
	}
	// time_init -> rtas_get_boot_time.
	st, tod := g.rtasCall(0, "get-time-of-day", 8)
	if st != 0 || tod[0] != 2026 || tod[1] != 11 || tod[2] != 25 || tod[3] != 7 || tod[4] != 30 || tod[5] != 15 {
		t.Fatalf("get-time-of-day: %d %v", st, tod)
	}
	// pSeries_nvram_init reads the first partition header.
	st, done := g.rtasCall(0, "nvram-fetch", 2, 0, nvramBufAddr, 16)
	if st != 0 || done[0] != 16 {
		t.Fatalf("nvram-fetch %d %v", st, done)
	}
	if got, _ := v.mem.Slice(nvramBufAddr+4, 12); string(got) != "ibm,rtas-log" {
		t.Fatalf("nvram-fetch brought %q", got)
	}
	// PCI probe: rtas_read_config via ibm,read-pci-config on each devfn
	// of bus 0 (address = reg[11:8]<<20 | bus<<16 | devfn<<8 | reg[7:0]).
	found := []uint32{}
	for devfn := uint32(0); devfn < 0x20; devfn += 8 {
		st, val := g.rtasCall(0, "ibm,read-pci-config", 2, devfn<<8, uint32(DefaultBUID>>32), uint32(DefaultBUID&0xffffffff), 4)
		if st != 0 {
			t.Fatalf("read-pci-config devfn %#x: %d", devfn, st)
		}
		if val[0] != 0xffffffff {
			found = append(found, devfn)
			if val[0] != 0x10001af4 {
				t.Fatalf("vendor/device %#x", val[0])
			}
		}
	}
	if len(found) != 1 || found[0] != 8 {
		t.Fatalf("probe found devfns %v", found)
	}
	// pci_enable_device: command register via the legacy call.
	if st, _ := g.rtasCall(0, "write-pci-config", 1, 1<<11|0x04, 2, 0x0006); st != 0 {
		t.Fatalf("write-pci-config %d", st)
	}
	if st, val := g.rtasCall(0, "read-pci-config", 2, 1<<11|0x04, 2); st != 0 || val[0] != 0x0006 {
		t.Fatalf("command readback %d %#x", st, val)
	}
	// XICS: ics_rtas_unmask_irq for the vty's and the device's sources,
	// then mask one; ics_rtas_get_server reads the routing back.
	for _, irq := range []uint32{0x1000, 0x1001} {
		if st, _ := g.rtasCall(0, "ibm,set-xive", 1, irq, 0, 5); st != 0 {
			t.Fatalf("set-xive %#x: %d", irq, st)
		}
		if st, _ := g.rtasCall(0, "ibm,int-on", 1, irq); st != 0 {
			t.Fatalf("int-on %#x: %d", irq, st)
		}
	}
	g.rtasCall(0, "ibm,int-off", 1, 0x1001)
	g.rtasCall(0, "ibm,set-xive", 1, 0x1001, 0, 0xff)
	if st, xive := g.rtasCall(0, "ibm,get-xive", 3, 0x1000); st != 0 || xive[0] != 0 || xive[1] != 5 {
		t.Fatalf("get-xive %d %v", st, xive)
	}
	if e, _ := v.ICS().Get(0x1001); e.Enabled() {
		t.Fatal("masked source still enabled")
	}
	// smp_startup_cpu: query the secondary, start it at
	// generic_secondary_smp_init with r3 = its hard id.
	if st, state := g.rtasCall(0, "query-cpu-stopped-state", 2, 1); st != 0 || state[0] != 0 {
		t.Fatalf("secondary state %d %v", st, state)
	}
	started := make(chan [2]uint64, 1)
	go func() {
		pc, r3, ok := v.cpus[1].WaitStart(v.Done())
		if ok {
			started <- [2]uint64{pc, r3}
		}
	}()
	if st, _ := g.rtasCall(0, "start-cpu", 1, 1, 0x60, 1); st != 0 {
		t.Fatalf("start-cpu %d", st)
	}
	if got := <-started; got != [2]uint64{0x60, 1} {
		t.Fatalf("secondary entry %#x", got)
	}
	if st, state := g.rtasCall(0, "query-cpu-stopped-state", 2, 1); st != 0 || state[0] != 2 {
		t.Fatalf("secondary after start %d %v", st, state)
	}
	// xics_setup_cpu on each CPU: H_CPPR(0xff) opens the presenter.
	for cpu := 0; cpu < 2; cpu++ {
		if ret, _ := g.hcall(cpu, HCPPR, 0xff); ret != HSuccess {
			t.Fatalf("H_CPPR: %d", ret)
		}
	}
	// smp_call_function: icp_hv_cause_ipi(1) = H_IPI(1, IPI_PRIORITY 4);
	// CPU 1 takes it with H_XIRR, clears MFRR and EOIs.
	g.hcall(0, HIPI, 1, 4)
	if ret, regs := g.hcall(1, HXIRR, 0xff); ret != HSuccess || regs[0] != 0xff000002 {
		t.Fatalf("H_XIRR on CPU 1: %d %#x", ret, regs[0])
	}
	g.hcall(1, HIPI, 1, 0xff)
	g.hcall(1, HEOI, 0xff000002)
	// The device's MSI (source 0x1000, routed to CPU 0 at priority 5
	// above) fires: CPU 0 takes and ends it.
	v.ICS().Trigger(0x1000)
	if ret, regs := g.hcall(0, HXIRR, 0xff); ret != HSuccess || regs[0] != 0xff001000 {
		t.Fatalf("H_XIRR on CPU 0: %d %#x", ret, regs[0])
	}
	g.hcall(0, HEOI, 0xff001000)
	if v.ICS().Pending(0) || v.ICS().Pending(1) {
		t.Fatal("interrupt still pending after EOI")
	}
	// The secondary prints through the vty and idles with H_CEDE; CPU 0
	// prods it.
	g.hvcPut(1, VTYReg, "smp: Brought up 1 node, 2 CPUs\n")
	if ret, _ := g.hcall(0, HProd, 1); ret != HSuccess {
		t.Fatalf("H_PROD %d", ret)
	}
	if ret, _ := g.hcall(1, HCede); ret != HSuccess {
		t.Fatalf("H_CEDE %d", ret)
	}
	// rtasd: event-scan of all events into its log buffer; nothing found.
	if st, _ := g.rtasCall(0, "event-scan", 1, 0xffffffff, 0, logBufAddr, 2048); st != RTASNoErrorsFound {
		t.Fatalf("event-scan %d", st)
	}
	// hvc_vio polls for input: none, then a key typed on the host.
	if ret, regs := g.hcall(0, HGetTermChar, VTYReg); ret != HSuccess || regs[0] != 0 {
		t.Fatalf("H_GET_TERM_CHAR idle: %d %v", ret, regs[0])
	}
	v.VTY().Feed([]byte("y\r"))
	if ret, regs := g.hcall(0, HGetTermChar, VTYReg); ret != HSuccess || regs[0] != 2 || regs[1]>>48 != 'y'<<8|'\r' {
		t.Fatalf("H_GET_TERM_CHAR: %d %v", ret, regs[:3])
	}
	// The secondary goes offline (rtas_stop_self), then shutdown:
	// rtas_power_off(-1, -1).
	g.rtasCall(1, "stop-self", 1)
	if !v.cpus[1].TakeStop() {
		t.Fatal("stop-self did not park the secondary")
	}
	g.hvcPut(0, VTYReg, "reboot: Power down\n")
	if st, _ := g.rtasCall(0, "power-off", 1, 0xffffffff, 0xffffffff); st != 0 {
		t.Fatalf("power-off %d", st)
	}
	select {
	case <-v.Done():
	default:
		t.Fatal("power-off did not stop the machine")
	}
	if v.ExitReason() != ExitPowerOff {
		t.Fatalf("exit reason %v", v.ExitReason())
	}
	want := "Linux version 6.1.0-petrel (replay)\nsmp: Brought up 1 node, 2 CPUs\nreboot: Power down\n"
	if got := v.console.String(); got != want {
		t.Fatalf("console:\n%q\nwant\n%q", got, want)
	}
	if v.UnknownHcalls() != 0 || v.UnknownRTAS() != 0 {
		t.Fatalf("unknown calls during boot: %d hcalls, %d RTAS", v.UnknownHcalls(), v.UnknownRTAS())
	}
}
