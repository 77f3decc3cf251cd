//go:build amd64

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/machine/pcqmp"
	"github.com/petrel-vmm/petrel/qemuopt"
)

// init registers `petrel run`, the x86 PC machine; run-pseries is its
// ppc64 counterpart (run_pseries.go).
func init() {
	register("run", "boot a virtual machine (QEMU-style options: -kernel -initrd -append -m -smp -disk -drive -blockdev -device -serial -qmp)", runMain)
}

// listFlag collects a repeatable option.
type listFlag []string

// String and Set make listFlag a flag.Value; every occurrence of the option
// appends, in command-line order, which is the order devices are created.
func (l *listFlag) String() string { return strings.Join(*l, " ") }

// Set appends one occurrence; it never fails (each value is parsed later).
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// runOptions are the parsed `petrel run` options.
type runOptions struct {
	// cfg is the machine configuration, complete but for the host-side
	// pieces runMain fills after parsing (serial streams, QMP events,
	// Reboot, Log).
	cfg pc.Config
	// serial is -serial as given: "stdio", "none" or "file:PATH" (checked
	// by parseRunArgs, opened by openConsole).
	serial string
	// qmp is -qmp as given: "" (no monitor), "stdio" or
	// "unix:PATH,server[,wait=off]" (parsed by startQMP).
	qmp string
	// noReboot is -no-reboot: a guest reset ends the run instead of
	// restarting the machine in place.
	noReboot bool
	// verbose is -v: the machine logs its boot path and timings to stderr.
	verbose bool
	loadvm  string        // -loadvm TAG: start from a saved machine
	devs    deviceOptions // -blockdev/-object/-chardev/-device (run_devices.go)
}

// parseRunArgs parses and checks `petrel run`'s options without opening
// anything: every mistake it can see (a bad size, an unknown device
// reference, -qmp stdio together with -serial stdio) fails here, before a
// file or a KVM fd exists. Flag errors and -h go to stderr; -h returns an
// error matching flag.ErrHelp.
func parseRunArgs(args []string, stderr io.Writer) (*runOptions, error) {
	fs := flag.NewFlagSet("petrel run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o                           runOptions
		mem, cpu, boot, smp, kcache string
		disks, drives               listFlag
		nographic                   bool
	)
	// Option names and syntax follow QEMU's where QEMU has the option
	// (but -m defaults to 256M, not QEMU's 128M); -disk, -boot-protocol
	// and -kernel-cache are Petrel's own.
	fs.StringVar(&o.cfg.Kernel, "kernel", "", "kernel: bzImage or ELF vmlinux with a PVH note")
	fs.StringVar(&o.cfg.Initrd, "initrd", "", "initial ramdisk")
	fs.StringVar(&o.cfg.Cmdline, "append", "", "kernel command line")
	fs.StringVar(&mem, "m", "256M", "guest RAM (QEMU size syntax: 512, 512M, 2G)")
	fs.StringVar(&smp, "smp", "1", "vCPU count (N or cpus=N)")
	fs.StringVar(&cpu, "cpu", "host", "CPU model: host[,+feature,-feature]")
	fs.StringVar(&boot, "boot-protocol", "auto", "auto, pvh or linux64")
	fs.StringVar(&kcache, "kernel-cache", "", "directory caching decompressed kernels (default: user cache dir)")
	fs.Var(&disks, "disk", "FILE[,readonly=on,cache=none|writeback|unsafe,format=qcow2|qed|raw,serial=STR,id=NAME] (repeatable)")
	fs.Var(&drives, "drive", "file=FILE[,if=virtio|none][,format=,readonly=on,cache=,id=,serial=] (repeatable)")
	fs.StringVar(&o.serial, "serial", "stdio", "COM1: stdio, none or file:PATH")
	fs.StringVar(&o.qmp, "qmp", "", "QMP server: unix:PATH,server[,wait=off] or stdio")
	fs.BoolVar(&nographic, "nographic", false, "accepted for QEMU compatibility (there is no display)")
	fs.BoolVar(&o.cfg.NoACPI, "no-acpi", false, "boot without ACPI tables")
	fs.BoolVar(&o.noReboot, "no-reboot", false, "exit instead of rebooting when the guest resets")
	fs.StringVar(&o.loadvm, "loadvm", "", "start from the VM snapshot TAG (savevm) in the disks")
	fs.BoolVar(&o.verbose, "v", false, "verbose: boot path and timings on stderr")
	o.devs.register(fs)
	if err := fs.Parse(args); err != nil {
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
	// -disk before -drive: a disk without id= is named disk<i> by its index
	// in cfg.Disks (deviceOptions.parse), so this order is part of the
	// names -device drive= can refer to.
	for _, d := range disks {
		dc, err := qemuopt.ParseDisk(d)
		if err != nil {
			return nil, err
		}
		o.cfg.Disks = append(o.cfg.Disks, dc)
	}
	for _, d := range drives {
		dc, err := qemuopt.ParseDrive(d)
		if err != nil {
			return nil, err
		}
		o.cfg.Disks = append(o.cfg.Disks, dc)
	}
	if err := o.devs.parse(&o.cfg); err != nil {
		return nil, err
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

// runMain builds the machine and runs it until the guest powers off (or
// resets under -no-reboot), a signal arrives, QMP quit is sent, or Ctrl-a x
// is typed: all of these cancel ctx. The order matters: the console and
// the QMP socket exist before pc.New so that their errors come before the
// machine is built, and QMP serves only after -loadvm has restored the
// machine, so a client never sees the state before the restore.
// Exit status: 0 when the run ends normally (guest power-off, signal,
// quit), 1 when the machine cannot be built, restored or run, 2 for bad
// options.
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
	o.cfg.Reboot = !o.noReboot
	if hub != nil {
		sess := hub.session()
		defer sess.Close()
		o.cfg.SerialIn = sess
	}
	m, err := pc.New(o.cfg)
	if err != nil {
		con.Close()
		fmt.Fprintf(os.Stderr, "petrel run: %v\n", err)
		return 1
	}
	defer m.Close()
	if o.loadvm != "" {
		if err := m.LoadVM(pc.SnapshotRequest{Tag: o.loadvm}); err != nil {
			fmt.Fprintf(os.Stderr, "petrel run: -loadvm %s: %v\n", o.loadvm, err)
			return 1
		}
	}
	q.serve(pcqmp.New(m, cancel))
	if err := q.waitClient(); err != nil {
		fmt.Fprintf(os.Stderr, "petrel run: %v\n", err)
		return 1
	}
	// Setup's garbage (a decompressed kernel on a cache miss, the initrd,
	// a loaded VM state) would stay resident until the scavenger got to
	// it; the guest runs for long, so it goes back to the kernel now.
	debug.FreeOSMemory()
	// A guest reset restarts the machine in place (pc.Config.Reboot); Run
	// returns ExitReset only with -no-reboot.
	reason, err := m.Run(ctx)
	if err != nil {
		con.Close()
		fmt.Fprintf(os.Stderr, "petrel run: guest stopped: %s: %v\n", reason, err)
		return 1
	}
	if o.verbose {
		fmt.Fprintf(os.Stderr, "petrel: guest stopped: %s\n", reason)
	}
	return 0
}
