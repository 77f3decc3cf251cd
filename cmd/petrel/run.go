package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/petrel-vmm/petrel/machine/pc"
)

func init() {
	register("run", "boot a virtual machine (QEMU-style options: -kernel -initrd -append -m -smp -disk -drive -serial -qmp)", runMain)
}

// listFlag collects a repeatable option.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// runOptions are the parsed `petrel run` options.
type runOptions struct {
	cfg      pc.Config
	serial   string
	qmp      string
	noReboot bool
	verbose  bool
	pciDevs  pciDeviceOptions // -object/-chardev/-device (run_ivshmem.go)
}

func parseRunArgs(args []string, stderr io.Writer) (*runOptions, error) {
	fs := flag.NewFlagSet("petrel run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o                           runOptions
		mem, cpu, boot, smp, kcache string
		disks, drives               listFlag
		nographic                   bool
	)
	fs.StringVar(&o.cfg.Kernel, "kernel", "", "kernel: bzImage or ELF vmlinux with a PVH note")
	fs.StringVar(&o.cfg.Initrd, "initrd", "", "initial ramdisk")
	fs.StringVar(&o.cfg.Cmdline, "append", "", "kernel command line")
	fs.StringVar(&mem, "m", "256M", "guest RAM (QEMU size syntax: 512, 512M, 2G)")
	fs.StringVar(&smp, "smp", "1", "vCPU count (N or cpus=N)")
	fs.StringVar(&cpu, "cpu", "host", "CPU model: host[,+feature,-feature]")
	fs.StringVar(&boot, "boot-protocol", "auto", "auto, pvh or linux64")
	fs.StringVar(&kcache, "kernel-cache", "", "directory caching decompressed kernels (default: user cache dir)")
	fs.Var(&disks, "disk", "FILE[,readonly=on,cache=none|writeback|unsafe,format=qcow2|qed|raw,serial=STR,id=NAME] (repeatable)")
	fs.Var(&drives, "drive", "file=FILE,if=virtio[,format=,readonly=on,cache=,id=,serial=] (repeatable)")
	fs.StringVar(&o.serial, "serial", "stdio", "COM1: stdio, none or file:PATH")
	fs.StringVar(&o.qmp, "qmp", "", "QMP server: unix:PATH,server[,wait=off] or stdio")
	fs.BoolVar(&nographic, "nographic", false, "accepted for QEMU compatibility (there is no display)")
	fs.BoolVar(&o.cfg.NoACPI, "no-acpi", false, "boot without ACPI tables")
	fs.BoolVar(&o.noReboot, "no-reboot", false, "exit instead of rebooting when the guest resets")
	fs.BoolVar(&o.verbose, "v", false, "verbose: boot path and timings on stderr")
	o.pciDevs.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := o.pciDevs.parse(); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.cfg.Kernel == "" {
		return nil, errors.New("-kernel is required")
	}
	mib, err := parseMemSize(mem)
	if err != nil {
		return nil, err
	}
	o.cfg.MemoryMiB = mib
	if o.cfg.CPUs, err = parseSMP(smp); err != nil {
		return nil, err
	}
	o.cfg.CPU = cpu
	switch boot {
	case "auto":
	case "pvh":
		o.cfg.Boot = pc.BootPVH
	case "linux64":
		o.cfg.Boot = pc.BootLinux64
	default:
		return nil, fmt.Errorf("-boot-protocol %q: want auto, pvh or linux64", boot)
	}
	o.cfg.KernelCacheDir = kcache
	for _, d := range disks {
		dc, err := parseDisk(d, false)
		if err != nil {
			return nil, err
		}
		o.cfg.Disks = append(o.cfg.Disks, dc)
	}
	for _, d := range drives {
		dc, err := parseDisk(d, true)
		if err != nil {
			return nil, err
		}
		o.cfg.Disks = append(o.cfg.Disks, dc)
	}
	switch {
	case o.serial == "stdio", o.serial == "none", strings.HasPrefix(o.serial, "file:") && len(o.serial) > 5:
	default:
		return nil, fmt.Errorf("-serial %q: want stdio, none or file:PATH", o.serial)
	}
	if o.qmp == "stdio" && o.serial == "stdio" {
		return nil, errors.New("-qmp stdio and -serial stdio cannot share stdio; use -serial none or file:PATH")
	}
	return &o, nil
}

// parseMemSize parses QEMU's -m: a size with an optional K/M/G/T suffix
// (MiB without one), or "size=..." .
func parseMemSize(s string) (int, error) {
	s = strings.TrimPrefix(s, "size=")
	if i := strings.IndexByte(s, ','); i >= 0 {
		s = s[:i]
	}
	if s == "" {
		return 0, errors.New("-m: empty size")
	}
	unit := uint64(1 << 20)
	num := s
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		unit, num = 1<<10, s[:len(s)-1]
	case "M":
		unit, num = 1<<20, s[:len(s)-1]
	case "G":
		unit, num = 1<<30, s[:len(s)-1]
	case "T":
		unit, num = 1<<40, s[:len(s)-1]
	case "B":
		unit, num = 1, s[:len(s)-1]
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n <= 0 || n*float64(unit) > 1<<40 {
		return 0, fmt.Errorf("-m %q: not a size between 2M and 1T", s)
	}
	bytes := uint64(n * float64(unit))
	if bytes < 2<<20 || bytes%(1<<20) != 0 {
		return 0, fmt.Errorf("-m %q: need a whole number of MiB, at least 2M", s)
	}
	return int(bytes >> 20), nil
}

// parseSMP parses "N" or "cpus=N[,...]".
func parseSMP(s string) (int, error) {
	for _, p := range strings.Split(s, ",") {
		v := strings.TrimPrefix(p, "cpus=")
		if n, err := strconv.Atoi(v); err == nil {
			if n < 1 || n > 255 {
				return 0, fmt.Errorf("-smp %q: cpu count must be 1..255", s)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("-smp %q: want N or cpus=N", s)
}

// parseDisk parses -disk FILE[,opts] (qemuDrive false) or -drive file=...
func parseDisk(s string, qemuDrive bool) (pc.DiskConfig, error) {
	var d pc.DiskConfig
	parts := splitOpts(s)
	if !qemuDrive {
		if len(parts) == 0 || strings.Contains(parts[0], "=") && !strings.HasPrefix(parts[0], "file=") {
			return d, fmt.Errorf("-disk %q: first item must be the image file", s)
		}
		d.Path = strings.TrimPrefix(parts[0], "file=")
		parts = parts[1:]
	}
	for _, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return d, fmt.Errorf("disk option %q in %q: want key=value", p, s)
		}
		switch k {
		case "file":
			d.Path = v
		case "if":
			if v != "virtio" {
				return d, fmt.Errorf("disk %q: only if=virtio is supported", s)
			}
		case "format":
			switch v {
			case "qcow2", "qed", "raw":
				d.Format = v
			default:
				return d, fmt.Errorf("disk %q: format %q: want qcow2, qed or raw", s, v)
			}
		case "readonly":
			b, err := parseOnOff(v)
			if err != nil {
				return d, fmt.Errorf("disk %q: readonly: %w", s, err)
			}
			d.ReadOnly = b
		case "cache":
			switch v {
			case "none", "directsync":
				d.DirectIO, d.NoSync = true, false
			case "writeback", "writethrough":
				d.DirectIO, d.NoSync = false, false
			case "unsafe":
				d.DirectIO, d.NoSync = false, true
			default:
				return d, fmt.Errorf("disk %q: cache %q: want none, writeback or unsafe", s, v)
			}
		case "serial":
			d.Serial = v
		case "id":
			d.ID = v
		case "media":
			if v != "disk" {
				return d, fmt.Errorf("disk %q: only media=disk is supported", s)
			}
		default:
			return d, fmt.Errorf("disk %q: unknown option %q", s, k)
		}
	}
	if d.Path == "" {
		return d, fmt.Errorf("disk %q: no file given", s)
	}
	return d, nil
}

// splitOpts splits QEMU options at commas; ",," is a literal comma.
func splitOpts(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	return append(out, cur.String())
}

func parseOnOff(v string) (bool, error) {
	switch v {
	case "on", "yes", "true", "1":
		return true, nil
	case "off", "no", "false", "0":
		return false, nil
	}
	return false, fmt.Errorf("%q is not on or off", v)
}

func runMain(args []string) int {
	o, err := parseRunArgs(args, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "petrel run: %v\n", err)
		return 2
	}
	if o.verbose {
		o.cfg.Log = os.Stderr
	}
	con, err := openConsole(o.serial)
	if err != nil {
		fmt.Fprintf(os.Stderr, "petrel run: %v\n", err)
		return 1
	}
	defer con.Close()
	o.cfg.Serial = con.out
	var hub *inputHub
	if con.in != nil {
		hub = newInputHub(con.in)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	con.onQuit = cancel

	q, err := startQMP(o.qmp, cancel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "petrel run: %v\n", err)
		return 1
	}
	defer q.Close()
	o.cfg.Events = q.emit
	defer o.pciDevs.close()
	for {
		var sess *session
		if hub != nil {
			sess = hub.session()
			o.cfg.SerialIn = sess
		}
		m, err := pc.New(o.cfg)
		if err == nil {
			if err = o.pciDevs.attach(m); err != nil {
				m.Close()
			}
		}
		if err != nil {
			con.Close()
			fmt.Fprintf(os.Stderr, "petrel run: %v\n", err)
			return 1
		}
		q.attach(m)
		if err := q.waitClient(); err != nil {
			m.Close()
			fmt.Fprintf(os.Stderr, "petrel run: %v\n", err)
			return 1
		}
		reason, err := m.Run(ctx)
		if sess != nil {
			sess.Close() // the next machine reads the input that follows
		}
		q.detach()
		m.Close()
		if err != nil {
			con.Close()
			fmt.Fprintf(os.Stderr, "petrel run: guest stopped: %s: %v\n", reason, err)
			return 1
		}
		if o.verbose {
			fmt.Fprintf(os.Stderr, "petrel: guest stopped: %s\n", reason)
		}
		if reason == pc.ExitReset && !o.noReboot {
			continue
		}
		return 0
	}
}
