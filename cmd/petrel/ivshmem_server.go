package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/petrel-vmm/petrel/devices/ivshmem/hostmem"
	"github.com/petrel-vmm/petrel/devices/ivshmem/server"
	"github.com/petrel-vmm/petrel/qemuopt"
)

// init registers `petrel ivshmem-server`, the counterpart of QEMU's
// contrib/ivshmem-server that ivshmem-doorbell devices (Petrel's or QEMU's)
// connect to through -chardev socket.
func init() {
	register("ivshmem-server", "inter-VM shared memory server (QEMU ivshmem-server compatible)", runIvshmemServer)
}

// runIvshmemServer takes the flags of QEMU's contrib/ivshmem-server. It
// always runs in the foreground (-F is accepted for compatibility) and
// stops cleanly on SIGINT or SIGTERM.
func runIvshmemServer(args []string) int {
	// The defaults are QEMU's ivshmem-server's: socket /tmp/ivshmem_socket,
	// shm object "ivshmem", 4 MiB, one vector.
	fs := flag.NewFlagSet("ivshmem-server", flag.ContinueOnError)
	sock := fs.String("S", "/tmp/ivshmem_socket", "UNIX socket path")
	shmName := fs.String("m", "ivshmem", "POSIX shared memory object name (in /dev/shm), or a directory (hugetlbfs mount) for an unlinked object")
	sizeArg := fs.String("l", "4M", "shared memory size (power of two; suffixes K, M, G, T)")
	vectors := fs.Int("n", 1, "number of interrupt vectors per peer (1..64)")
	fs.Bool("F", false, "run in the foreground (always the case)")
	pidFile := fs.String("p", "", "write the process ID to this file")
	verbose := fs.Bool("v", false, "log every connection event")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: petrel ivshmem-server [-S SOCKET] [-m SHM_NAME] [-l SIZE] [-n VECTORS] [-F] [-p PIDFILE] [-v]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "ivshmem-server: unexpected arguments %q\n", fs.Args())
		return 2
	}
	size, err := qemuopt.ParseSize(*sizeArg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ivshmem-server: -l: %v\n", err)
		return 2
	}
	// -m names a POSIX shm object as QEMU's server does (shm_open's name,
	// i.e. a file in /dev/shm); a directory instead is taken as a hugetlbfs
	// mount, in which server.New creates an object of its own that has no
	// name (hostmem.AnonymousIn).
	shmPath, err := hostmem.ShmPath(*shmName)
	if st, serr := os.Stat(*shmName); serr == nil && st.IsDir() {
		shmPath, err = *shmName, nil
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ivshmem-server: -m: %v\n", err)
		return 2
	}
	logger := log.New(os.Stderr, "ivshmem-server: ", log.LstdFlags)
	cfg := server.Config{SocketPath: *sock, ShmPath: shmPath, Size: size, Vectors: *vectors}
	if *verbose {
		cfg.Logf = logger.Printf
	}
	s, err := server.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if *pidFile != "" {
		if err := os.WriteFile(*pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			s.Close()
			fmt.Fprintf(os.Stderr, "ivshmem-server: writing pid file: %v\n", err)
			return 1
		}
		defer os.Remove(*pidFile)
	}
	if *verbose {
		logger.Printf("listening on %s, memory %s (%d bytes), %d vectors", *sock, shmPath, size, *vectors)
	}
	// Closing the server makes Serve return nil, so a signal ends the
	// process through the normal path and the deferred pid file removal.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		s.Close()
	}()
	if err := s.Serve(); err != nil {
		s.Close()
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
