package pseries

import (
	"encoding/binary"
	"fmt"
)

// RTAS status values (PAPR R1-7.2.x; QEMU spapr.h RTAS_OUT_*).
const (
	RTASSuccess        int32 = 0
	RTASNoErrorsFound  int32 = 1
	RTASHardwareError  int32 = -1
	RTASParameterError int32 = -3
)

// rtasTokenBase is the first token; like QEMU, tokens are small integers
// above a base, published per service in /rtas of the device tree.
const rtasTokenBase = 0x2000

// rtasDisplayCharacterLegacy is the token some early Linux debug code uses
// for display-character without looking it up (QEMU keeps the same hack).
const rtasDisplayCharacterLegacy = 0xa

// rtasMaxCells is how many argument and return cells are copied between
// guest memory and a call: the size of Linux's struct rtas_args.args.
// Every service takes fewer; a call with more fails its count check.
const rtasMaxCells = 16

// rtasMaxCount bounds nargs and nret so the block length cannot overflow.
const rtasMaxCount = 1024

// rtasCall is one decoded RTAS parameter block:
//
//	be32 token; be32 nargs; be32 nret; be32 args[nargs]; be32 rets[nret]
//
// as Linux's struct rtas_args lays it out (rets follow the args).
type rtasCall struct {
	token, nargs, nret uint32
	args               [rtasMaxCells]uint32
	rets               [rtasMaxCells]uint32
	nrets              int // rets[:nrets] are written back (bounded by nret)
}

func (c *rtasCall) arg(i int) uint32 { return c.args[i] }

// ret sets return cell i (rets[0] is the status).
func (c *rtasCall) ret(i int, v uint32) {
	if i >= rtasMaxCells {
		return
	}
	c.rets[i] = v
	if i+1 > c.nrets {
		c.nrets = i + 1
	}
}

func (c *rtasCall) status(s int32) { c.ret(0, uint32(s)) }

// counts checks a service's fixed argument and return counts; on mismatch
// it sets status -3 (parameter error) and returns false.
func (c *rtasCall) counts(nargs, nret uint32) bool {
	if c.nargs != nargs || c.nret != nret {
		c.status(RTASParameterError)
		return false
	}
	return true
}

type rtasFunc func(m *Machine, cpu *CPU, c *rtasCall)

type rtasService struct {
	name string
	fn   rtasFunc
}

// rtasServices is indexed by token - rtasTokenBase. The order only fixes
// the token numbers; the device tree publishes them.
var rtasServices = []rtasService{
	{"display-character", rtasDisplayCharacter},
	{"get-time-of-day", rtasGetTimeOfDay},
	{"set-time-of-day", rtasSetTimeOfDay},
	{"power-off", rtasPowerOff},
	{"system-reboot", rtasSystemReboot},
	{"query-cpu-stopped-state", rtasQueryCPUStoppedState},
	{"start-cpu", rtasStartCPU},
	{"stop-self", rtasStopSelf},
	{"event-scan", rtasEventScan},
	{"check-exception", rtasCheckException},
	{"nvram-fetch", rtasNVRAMFetch},
	{"nvram-store", rtasNVRAMStore},
	{"ibm,set-xive", rtasSetXive},
	{"ibm,get-xive", rtasGetXive},
	{"ibm,int-off", rtasIntOff},
	{"ibm,int-on", rtasIntOn},
	{"read-pci-config", rtasReadPCIConfig},
	{"write-pci-config", rtasWritePCIConfig},
	{"ibm,read-pci-config", rtasIBMReadPCIConfig},
	{"ibm,write-pci-config", rtasIBMWritePCIConfig},
}

func init() {
	seen := map[string]bool{}
	for _, s := range rtasServices {
		if seen[s.name] || s.fn == nil {
			panic("pseries: bad or duplicate RTAS service " + s.name)
		}
		seen[s.name] = true
	}
}

// RTASToken returns the token of the named service, or false.
func RTASToken(name string) (uint32, bool) {
	for i, s := range rtasServices {
		if s.name == name {
			return rtasTokenBase + uint32(i), true
		}
	}
	return 0, false
}

// RTASServiceNames lists the services Petrel implements, in token order.
func RTASServiceNames() []string {
	names := make([]string, len(rtasServices))
	for i, s := range rtasServices {
		names[i] = s.name
	}
	return names
}

// physToReal drops the top 4 bits of an address the way the hardware does
// in real mode (QEMU's ppc64_phys_to_real).
func physToReal(addr uint64) uint64 { return addr & 0x0fff_ffff_ffff_ffff }

// hRTAS is H_RTAS (0xf000): r4 is the guest physical address of the
// parameter block. H_PARAMETER for an unknown token or a block outside
// guest memory (then nothing is written), H_SUCCESS otherwise with the
// RTAS status in rets[0].
func hRTAS(m *Machine, cpu *CPU, args *[9]uint64) int64 {
	ret, err := m.RTAS(cpu, args[0])
	if err != nil {
		m.logf("H_RTAS: %v", err)
	}
	return ret
}

// RTAS runs the RTAS call whose parameter block is at addr. It is what
// H_RTAS does; the error explains an H_PARAMETER result.
func (m *Machine) RTAS(cpu *CPU, addr uint64) (int64, error) {
	addr = physToReal(addr)
	var hdr [12]byte
	if err := m.mem.Read(addr, hdr[:]); err != nil {
		return HParameter, fmt.Errorf("reading RTAS block at %#x: %w", addr, err)
	}
	// The call record lives in the CPU (which runs one call at a time),
	// so the exit path does not allocate one per call.
	c := &cpu.rtas
	*c = rtasCall{
		token: binary.BigEndian.Uint32(hdr[0:]),
		nargs: binary.BigEndian.Uint32(hdr[4:]),
		nret:  binary.BigEndian.Uint32(hdr[8:]),
	}
	if c.nargs > rtasMaxCount || c.nret > rtasMaxCount {
		return HParameter, fmt.Errorf("RTAS block at %#x: nargs %d nret %d too large", addr, c.nargs, c.nret)
	}
	var cells []byte
	var err error
	if n := 4 * uint64(c.nargs+c.nret); n > 0 {
		if cells, err = m.mem.Slice(addr+12, n); err != nil {
			return HParameter, fmt.Errorf("RTAS block at %#x: %w", addr, err)
		}
	}
	for i := 0; i < int(c.nargs) && i < rtasMaxCells; i++ {
		c.args[i] = binary.BigEndian.Uint32(cells[4*i:])
	}
	var fn rtasFunc
	switch idx := uint64(c.token) - rtasTokenBase; {
	case c.token >= rtasTokenBase && idx < uint64(len(rtasServices)):
		fn = rtasServices[idx].fn
	case c.token == rtasDisplayCharacterLegacy:
		fn = rtasDisplayCharacter
	}
	ret := HSuccess
	if fn == nil {
		m.stats.unknownRTAS.Add(1)
		c.status(RTASParameterError)
		ret, err = HParameter, fmt.Errorf("unknown RTAS token %#x", c.token)
	} else {
		fn(m, cpu, c)
	}
	rets := cells[4*c.nargs:]
	for i := 0; i < c.nrets && i < int(c.nret); i++ {
		binary.BigEndian.PutUint32(rets[4*i:], c.rets[i])
	}
	return ret, err
}
