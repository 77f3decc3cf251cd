// Command petrel is the Petrel virtual machine monitor and its tools.
//
// Each subcommand lives in its own file and registers itself from init,
// so that the VMM, the image tool and the servers stay independent.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// command is one `petrel NAME ...` subcommand. run gets the arguments after
// NAME and returns the process exit code.
type command struct {
	// summary is the one line `petrel help` prints beside the name.
	summary string
	// run is handed os.Args[2:]; its result becomes the exit status: by
	// convention 0 success, 1 a failure at run time, 2 a usage error
	// (what flag.ContinueOnError reports).
	run func(args []string) int
}

// commands holds every subcommand by name. It is filled only from init
// functions (register), before main reads it, so it needs no lock.
var commands = map[string]command{}

// personas are programs petrel stands in for when invoked under their name
// (a `qemu-img` symlink to petrel behaves as qemu-img); each gets every
// argument after the program name.
//
// The name is the base name of os.Args[0], so the symlink may live
// anywhere; a persona takes precedence over subcommands entirely.
var personas = map[string]func(args []string) int{}

// register adds a subcommand; a duplicate name is a programming error.
func register(name, summary string, run func(args []string) int) {
	if _, dup := commands[name]; dup {
		panic("petrel: duplicate subcommand " + name)
	}
	commands[name] = command{summary: summary, run: run}
}

// usage prints the subcommands to stderr, sorted by name so that the
// output does not depend on map order or on file init order.
func usage() {
	fmt.Fprintln(os.Stderr, "usage: petrel COMMAND [ARGS...]")
	fmt.Fprintln(os.Stderr, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-16s %s\n", n, commands[n].summary)
	}
}

// main picks a persona by the name petrel was run under first, so that a
// `qemu-img` symlink never sees petrel's own subcommand syntax; otherwise
// os.Args[1] names the subcommand. `petrel` alone is a usage error (exit
// 1), `petrel help` is not (exit 0).
func main() {
	if run, ok := personas[filepath.Base(os.Args[0])]; ok {
		os.Exit(run(os.Args[1:]))
	}
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(1)
		}
		return
	}
	c, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "petrel: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(1)
	}
	os.Exit(c.run(os.Args[2:]))
}
