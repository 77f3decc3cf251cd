package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/petrel-vmm/petrel/machine/pseries"
)

// init registers `petrel run-pseries`. It is built on every host so that
// its options can be parsed and tested anywhere; pseries.Run fails at run
// time on a host that is not ppc64.
func init() {
	register("run-pseries", "boot a PowerPC pseries (sPAPR) guest on a ppc64 KVM host (-kernel -initrd -append -m -smp -nvram)", runPseriesMain)
}

// parsePseriesArgs parses `petrel run-pseries`'s options and reads the
// kernel and initrd into memory (the machine places them itself). -kvm-type
// maps to pseries.Config.KVMType (0 auto, 1 HV, 2 PR, KVM_CREATE_VM's type
// argument on ppc64). Like parseRunArgs, -h yields flag.ErrHelp.
func parsePseriesArgs(args []string, stderr io.Writer) (pseries.Config, error) {
	fs := flag.NewFlagSet("petrel run-pseries", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg                   pseries.Config
		kernel, initrd, mem   string
		smp, kvmType, console string
	)
	fs.StringVar(&kernel, "kernel", "", "kernel: ppc64 ELF vmlinux, or a flat image entered at 0")
	fs.StringVar(&initrd, "initrd", "", "initial ramdisk")
	fs.StringVar(&cfg.Cmdline, "append", "", "kernel command line")
	fs.StringVar(&mem, "m", "256M", "guest RAM (QEMU size syntax)")
	fs.StringVar(&smp, "smp", "1", "vCPU count (N or cpus=N)")
	fs.StringVar(&cfg.NVRAMPath, "nvram", "", "NVRAM backing file (default: memory only)")
	fs.StringVar(&kvmType, "kvm-type", "auto", "KVM flavour: auto, HV or PR")
	fs.StringVar(&console, "console", "stdio", "vty: stdio or none")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if kernel == "" {
		return cfg, errors.New("-kernel is required")
	}
	var err error
	if cfg.Kernel, err = os.ReadFile(kernel); err != nil {
		return cfg, fmt.Errorf("reading kernel: %w", err)
	}
	if initrd != "" {
		if cfg.Initrd, err = os.ReadFile(initrd); err != nil {
			return cfg, fmt.Errorf("reading initrd: %w", err)
		}
	}
	mib, err := parseMemSize(mem)
	if err != nil {
		return cfg, err
	}
	cfg.RAMSize = uint64(mib) << 20
	if cfg.CPUs, err = parseSMP(smp); err != nil {
		return cfg, err
	}
	switch kvmType {
	case "auto":
	case "HV", "hv":
		cfg.KVMType = 1
	case "PR", "pr":
		cfg.KVMType = 2
	default:
		return cfg, fmt.Errorf("-kvm-type %q: want auto, HV or PR", kvmType)
	}
	switch console {
	case "stdio":
		cfg.Console, cfg.Input = os.Stdout, os.Stdin
	case "none":
	default:
		return cfg, fmt.Errorf("-console %q: want stdio or none", console)
	}
	cfg.Log = log.New(stderr, "petrel: ", log.LstdFlags)
	return cfg, nil
}

// runPseriesMain runs the guest until it stops; pseries.Run returns why
// (power off, reboot request) and that is printed on stderr.
func runPseriesMain(args []string) int {
	cfg, err := parsePseriesArgs(args, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "petrel run-pseries:", err)
		return 2
	}
	why, err := pseries.Run(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "petrel run-pseries:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "petrel run-pseries: guest %s\n", why)
	return 0
}
