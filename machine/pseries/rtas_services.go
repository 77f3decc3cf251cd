package pseries

import (
	"time"
)

// The RTAS services below follow PAPR and QEMU's hw/ppc/spapr_rtas.c for
// argument and return layout; each comment gives "nargs in -> nret out".

// display-character: 1 in (the character) -> 1 out (status).
func rtasDisplayCharacter(m *Machine, cpu *CPU, c *rtasCall) {
	if !c.counts(1, 1) {
		return
	}
	m.vty.Put([]byte{byte(c.arg(0))})
	c.status(RTASSuccess)
}

// get-time-of-day: 0 in -> 8 out (status, year, month 1-12, day 1-31,
// hour, minute, second, nanosecond), in UTC plus the guest's offset.
func rtasGetTimeOfDay(m *Machine, cpu *CPU, c *rtasCall) {
	if !c.counts(0, 8) {
		return
	}
	t := m.guestTime()
	c.status(RTASSuccess)
	for i, v := range []int{t.Year(), int(t.Month()), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond()} {
		c.ret(i+1, uint32(v))
	}
}

// guestTime is host time plus the offset set-time-of-day recorded.
func (m *Machine) guestTime() time.Time {
	return m.now().UTC().Add(time.Duration(m.rtcOffset.Load()))
}

// set-time-of-day: 7 in (year, month, day, hour, minute, second,
// nanosecond) -> 1 out. The guest clock is kept as an offset from host
// time, so it keeps ticking. An impossible date is a parameter error.
func rtasSetTimeOfDay(m *Machine, cpu *CPU, c *rtasCall) {
	if !c.counts(7, 1) {
		return
	}
	year, mon, day := int(c.arg(0)), int(c.arg(1)), int(c.arg(2))
	hour, min, sec, ns := int(c.arg(3)), int(c.arg(4)), int(c.arg(5)), int(c.arg(6))
	if year < 1970 || year > 9999 || mon < 1 || mon > 12 || day < 1 || hour > 23 || min > 59 || sec > 59 || ns > 999_999_999 {
		c.status(RTASParameterError)
		return
	}
	t := time.Date(year, time.Month(mon), day, hour, min, sec, ns, time.UTC)
	if t.Day() != day { // e.g. 31 April normalised to 1 May
		c.status(RTASParameterError)
		return
	}
	m.rtcOffset.Store(int64(t.Sub(m.now().UTC())))
	c.status(RTASSuccess)
}

// power-off: 2 in (power-on mask, two cells, ignored) -> 1 out.
func rtasPowerOff(m *Machine, cpu *CPU, c *rtasCall) {
	if !c.counts(2, 1) {
		return
	}
	m.RequestExit(ExitPowerOff)
	c.status(RTASSuccess)
}

// system-reboot: 0 in -> 1 out.
func rtasSystemReboot(m *Machine, cpu *CPU, c *rtasCall) {
	if !c.counts(0, 1) {
		return
	}
	m.RequestExit(ExitReboot)
	c.status(RTASSuccess)
}

// query-cpu-stopped-state: 1 in (CPU id = interrupt server number) ->
// 2 out (status, 0 stopped / 2 running). Unknown CPU: parameter error.
func rtasQueryCPUStoppedState(m *Machine, cpu *CPU, c *rtasCall) {
	if !c.counts(1, 2) {
		return
	}
	t := m.cpuByServer(uint64(c.arg(0)))
	if t == nil {
		c.status(RTASParameterError)
		return
	}
	state := uint32(0)
	if t.Running() {
		state = 2
	}
	c.status(RTASSuccess)
	c.ret(1, state)
}

// start-cpu: 3 in (CPU id, entry point, r3) -> 1 out. The CPU starts in
// 64-bit real mode at the entry point. Unknown CPU: parameter error; a
// CPU already running: hardware error (as QEMU).
func rtasStartCPU(m *Machine, cpu *CPU, c *rtasCall) {
	if !c.counts(3, 1) {
		return
	}
	t := m.cpuByServer(uint64(c.arg(0)))
	if t == nil {
		c.status(RTASParameterError)
		return
	}
	if !t.start(uint64(c.arg(1)), uint64(c.arg(2))) {
		c.status(RTASHardwareError)
		return
	}
	c.status(RTASSuccess)
}

// stop-self: 0 in -> 1 out. On success it does not return to the guest:
// the CPU parks until start-cpu, so no status is written.
func rtasStopSelf(m *Machine, cpu *CPU, c *rtasCall) {
	if !c.counts(0, 1) {
		return
	}
	cpu.stopSelf()
}

// event-scan: 4 in (event mask, critical, buffer, length) -> 1 out.
// Petrel raises no RTAS events, so the answer is always "no errors found".
func rtasEventScan(m *Machine, cpu *CPU, c *rtasCall) {
	if !c.counts(4, 1) {
		return
	}
	c.status(RTASNoErrorsFound)
}

// check-exception: 6 or 7 in (vector, info, mask, buffer, length,
// [extended info], ...) -> 1 out; no events, so "no errors found".
func rtasCheckException(m *Machine, cpu *CPU, c *rtasCall) {
	if (c.nargs != 6 && c.nargs != 7) || c.nret != 1 {
		c.status(RTASParameterError)
		return
	}
	c.status(RTASNoErrorsFound)
}
